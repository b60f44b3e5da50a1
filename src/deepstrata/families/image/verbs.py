"""The verbs on a finished image run: predict image files, evaluate on a data source (shards too)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deepstrata.errors import DataError
from deepstrata.families.prediction import Prediction


def run_preprocess(run):
    """The ``Preprocess`` the run recorded (``data.preprocess`` of model.json), or None: a run made before
    it, or of a fixed-size format, whose files are squashed to the model's input as they always were."""
    from deepstrata.data.image_preprocess import Preprocess

    record = (run.info.get("data") or {}).get("preprocess")
    return None if record is None else Preprocess.from_record(record)


def own_shards(run, source: str) -> str | None:
    """The run's own shards of ``source`` when the fit streamed that folder through them (it was over the memory
    budget, see ``families.image.spill``): the run's split, read chunk by chunk instead of decoding the folder."""
    from deepstrata.data.shards import is_shard_dir

    name = (run.info.get("data") or {}).get("shards")
    if name and source == run.config.data.source and is_shard_dir(Path(run.path) / name):
        return str(Path(run.path) / name)
    return None


def predict(run, paths) -> list[Prediction]:
    """Label and probability for each image file (or every image in a folder)."""
    from deepstrata.data.images import list_image_files, load_image_files

    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for item in paths:
        if not Path(item).exists():
            raise DataError(f"{item}: no such file or directory; {run.path} is {run.kind}, and predict "
                            "takes image files or folders of images")
        files.extend(list_image_files(item))
    if not files:
        raise DataError(f"{', '.join(map(str, paths))}: no image files found")
    channels, height, width = run.info["spec"]["in_shape"]
    images = load_image_files(files, channels, (height, width), preprocess=run_preprocess(run))
    probs = torch.softmax(logits(run, images), dim=1)
    best, index = probs.max(dim=1)
    return [
        Prediction(str(path), run.classes[i], float(p)) for path, i, p in zip(files, index.tolist(), best.tolist())
    ]


def evaluate(run, data: str | None = None, data_dir: str | None = None) -> dict:
    """Accuracy and macro-F1 of the kept model on a data source.

    On the source the run was trained on, the run's own test split is used (rebuilt
    from its seed); on a source with an official test split, that split; otherwise
    every example. Class names are matched by name, and the answer says which split.
    """
    from deepstrata.data.images import load_images
    from deepstrata.data.split import split_dataset
    from deepstrata.metrics import classification_metrics, confusion_matrix

    if data is not None:
        run.family.check_source(run, data, "evaluate")
    source = data or run.config.data.source
    same = source == run.config.data.source
    channels, height, width = run.info["spec"]["in_shape"]
    from deepstrata.data.shards import is_shard_dir

    if is_shard_dir(source):
        return evaluate_shards(run, source)
    own = own_shards(run, source)
    if own:
        return {**evaluate_shards(run, own), "data": source, "split": "test split of the run"}
    dataset = load_images(
        source,
        format=run.config.data.format if same else None,
        image_size=height if height == width else None,
        skip_bad=run.config.data.skip_bad,
        data_dir=data_dir or run.config.data.data_dir,
        preprocess=run_preprocess(run),
    )
    if same:
        splits = split_dataset(
            dataset, seed=run.config.train.seed,
            val_fraction=run.config.data.val_fraction, test_fraction=run.config.data.test_fraction,
        )
        x, y, which = splits.test_x, splits.test_y, "test split of the run"
    elif dataset.test_x is not None:
        x, y, which = dataset.test_x, dataset.test_y, "official test split"
    else:
        x, y, which = dataset.x, dataset.y, "all examples"
    x = match_shape(x, channels, height, width, source)
    y = map_labels(y, dataset.classes, run.classes, source)
    predicted = logits(run, x, as_scored=True).argmax(1).numpy()
    truth = y.numpy()
    result = classification_metrics(truth, predicted, len(run.classes))
    return {
        "data": source,
        "split": which,
        "examples": int(len(truth)),
        "metrics": result,
        "confusion": confusion_matrix(truth, predicted, len(run.classes)).tolist(),
    }


def evaluate_shards(run, source: str) -> dict:
    from deepstrata.metrics import classification_metrics, confusion_matrix

    truth, predicted = _shard_test_split(run, source)
    return {
        "data": source,
        "split": "test split of the shards",
        "examples": int(len(truth)),
        "metrics": classification_metrics(truth, predicted, len(run.classes)),
        "confusion": confusion_matrix(truth, predicted, len(run.classes)).tolist(),
    }

def logits(run, images: torch.Tensor, *, as_scored: bool = False) -> torch.Tensor:
    """Logits with test-time augmentation if the run trained with it, in the run's memory format; in fp32 (what
    predict and an export give), or with ``as_scored`` in the run's own precision, as its fit scored the test
    split (evaluate)."""
    from deepstrata.families.image.task import flip_mode, predict_logits

    train = run.config.train
    mirror = flip_mode(train.flip, run.info["spec"]["in_shape"][0]) != "none"
    precision = str(train.precision) if as_scored else "32"
    return predict_logits(run.model, images, run.device, precision=precision, tta=train.tta, mirror=mirror,
                          channels_last=train.uses_channels_last)


def _shard_test_split(run, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Truth and predictions over a shard directory's test split, read chunk by chunk (memory stays bounded)."""
    from deepstrata.data.shards import open_shards

    shards = open_shards(source)
    test = shards.splits["test"]
    if test.count == 0:
        raise DataError(f"{source}: the shards hold no test split to evaluate on")
    channels, height, width = run.info["spec"]["in_shape"]
    if tuple(shards.image_shape) != (channels, height, width):
        raise DataError(f"{source}: shards hold {'x'.join(map(str, shards.image_shape))} images; this run's model "
                        f"takes {channels}x{height}x{width}")
    truth, predicted = [], []
    for images, labels in test.chunks(4096):
        labels = map_labels(torch.from_numpy(np.ascontiguousarray(labels)), shards.classes, run.classes, source)
        predicted.append(logits(run, torch.from_numpy(np.ascontiguousarray(images)), as_scored=True).argmax(1).numpy())
        truth.append(labels.numpy())
    return np.concatenate(truth), np.concatenate(predicted)


def match_shape(x: torch.Tensor, channels: int, height: int, width: int, source: str) -> torch.Tensor:
    if x.shape[1] != channels:
        if x.shape[1] == 3 and channels == 1:
            x = x.float().mean(dim=1, keepdim=True).round().to(torch.uint8)
        elif x.shape[1] == 1 and channels == 3:
            x = x.expand(-1, 3, -1, -1).contiguous()
    if tuple(x.shape[-2:]) != (height, width):
        x = torch.nn.functional.interpolate(x.float(), size=(height, width), mode="bilinear", antialias=True)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x


def map_labels(y: torch.Tensor, data_classes: list[str], run_classes: list[str], source: str) -> torch.Tensor:
    if list(data_classes) == list(run_classes):
        return y
    unknown = [name for name in data_classes if name not in run_classes]
    if unknown:
        raise DataError(
            f"{source}: classes {', '.join(unknown[:5])} are not among the run's classes ({', '.join(run_classes)})"
        )
    table = torch.tensor([run_classes.index(name) for name in data_classes])
    return table[y]
