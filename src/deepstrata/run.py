"""The run directory: everything a finished (or interrupted) run leaves behind.

```
RUN/
  config.yaml          resolved configuration
  model.json           model spec, classes, input shape: enough to rebuild the model
  provenance.json      versions, git commit, device, command, date
  metrics.jsonl        one JSON object per epoch
  checkpoints/         last.* (resume) and best.safetensors (the kept weights)
  comparison.json      learned model vs hand-engineered baselines on the test split
  confusion.json       the learned model's confusion matrix on the test split
  report.html          one self-contained page
  .deepstrata-run.json the marker: format, version, status (running | failed | finished)
  .lock                while a fit uses the directory: its pid and host
```
How a fit creates, locks, replaces and finishes one is ``deepstrata.rundir``.
``Run`` reads such a directory; every verb after ``fit`` (evaluate, predict, compare,
inspect …) starts from one.
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deepstrata import __version__, runfiles
from deepstrata.config import RunConfig
from deepstrata.engine import checkpoint as ckpt
from deepstrata.engine.devices import resolve_device
from deepstrata.errors import DataError, RunError
from deepstrata.models.registry import build_model
from deepstrata.rundir import free_name, prepare_run_dir  # noqa: F401  (prepare_run_dir: the fits import it from here)

MODEL_FILE = "model.json"


def default_run_dir(source: str, model: str, root: Path = Path("runs")) -> Path:
    """``runs/<data>-<model>-<date>-<time>``, with ``-2``, ``-3`` … when two fits start in the same second."""
    stem = Path(source).name.split(".")[0] or "data"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return free_name(root / f"{stem}-{model}-{stamp}")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _package_version(module: str, distribution: str) -> str | None:
    """``module.__version__`` without importing it when it is not loaded yet.

    Importing scikit-learn (it pulls in SciPy) costs 1-2 s; a run that never touched it
    (``--no-baselines``) reads the same version string from the installed metadata.
    """
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__version__", None):
        return loaded.__version__
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        pass
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def provenance(device: torch.device, seed: int) -> dict:
    """What is needed to reproduce a run months later."""
    return {
        "deepstrata": __version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": _package_version("sklearn", "scikit-learn"),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "seed": seed,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass
class Prediction:
    path: str
    label: str
    probability: float

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label, "probability": round(self.probability, 6)}


class Run:
    """A run directory opened for use: the trained model plus what was recorded about it."""

    def __init__(self, path: str | Path, *, device: str = "cpu") -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise RunError(f"{self.path}: run directory not found")
        info_path = self.path / MODEL_FILE
        if not info_path.is_file():
            raise RunError(f"{self.path}: not a deepstrata run directory ({MODEL_FILE} not found)")
        self.info = _checked_info(runfiles.read_json(info_path), info_path)
        self._config: RunConfig | None = None
        self.device = resolve_device(device)
        self._model: nn.Module | None = None

    @property
    def config(self) -> RunConfig:
        """The run's resolved ``config.yaml``, read when first needed; a missing or damaged one is a ``RunError``.

        Never a default in its place: a verb that needs the run's data source, split or
        preprocessing would otherwise answer for another run (``features`` of a text run once
        read the default source ``digits`` as one text).
        """
        if self._config is None:
            self._config = runfiles.read_config(self.path / "config.yaml")
            if self._config.task != self.task:
                raise runfiles.damaged(self.path / "config.yaml", f"task {self._config.task!r}, but model.json "
                                                                  f"says {self.task!r}")
        return self._config

    @property
    def task(self) -> str:
        return self.info.get("task", "image-classification")

    @property
    def kind(self) -> str:
        """What the run is, for messages: 'an image-classification run (cnn)'."""
        family = self.info.get("spec", {}).get("family", "?")
        article = "an" if self.task[0] in "aeiou" else "a"
        return f"{article} {self.task} run ({family})"

    def require(self, *tasks: str, verb: str, expects: str) -> None:
        """Refuse a verb that does not apply to this run's task, saying what the run is and what the verb expects."""
        if self.task not in tasks:
            plural = " and " in verb or "," in verb
            raise RunError(f"{self.path}: {self.kind}; {verb} {'expect' if plural else 'expects'} {expects}")

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    def load_model(self) -> nn.Module:
        """A fresh copy of the model with its best weights (CPU, train mode): what ``update`` continues from."""
        info_path = self.path / MODEL_FILE
        try:
            model = build_model(self.info["spec"])
        except RunError as err:  # the registry's "model.json: unknown model family ..."
            raise runfiles.damaged(info_path, str(err).removeprefix(f"{MODEL_FILE}: ")) from None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise runfiles.damaged(info_path, f"its model spec cannot be built ({type(err).__name__}: "
                                              f"{str(err).splitlines()[0] if str(err) else '-'})") from None
        weights = self.path / "checkpoints" / "best.safetensors"
        if not weights.is_file():
            raise RunError(f"{self.path}: no trained weights (checkpoints/best.safetensors not found); "
                           "did the run finish an epoch?")
        try:
            ckpt.load_weights(weights, model)
        except RunError as err:
            raise runfiles.rewrap(err, weights) from None
        return model

    @property
    def model(self) -> nn.Module:
        """The model with its best weights, built lazily and kept in eval mode."""
        if self._model is None:
            self._model = self.load_model().to(self.device).eval()
        return self._model

    def comparison(self) -> dict:
        """``comparison.json``, checked: an object whose ``rows`` are objects with a name and metrics."""
        from deepstrata.report import _rows

        path = self.path / "comparison.json"
        if not path.is_file():
            raise RunError(f"{self.path}: no comparison.json; the run did not finish")
        comparison = runfiles.read_json(path)
        try:
            _rows(comparison)
        except RunError as err:
            raise runfiles.damaged(path, str(err).removeprefix("comparison: ")) from None
        return comparison

    def history(self) -> list[dict]:
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        return runfiles.read_jsonl(path)

    def compare(self) -> str:
        """The comparison table as text, as ``deepstrata compare`` prints it."""
        from deepstrata.report import format_comparison_table

        return format_comparison_table(self.comparison())

    def recommend(self, user, k: int = 10) -> dict:
        """Top-``k`` unseen items for ``user`` (recommendation runs); unknown users get popular items."""
        from deepstrata.tasks import recommendation

        return recommendation.recommend(self, user, k)

    def similar(self, item, k: int = 10) -> dict:
        """The ``k`` items nearest to ``item`` in the learned embedding space (recommendation runs)."""
        from deepstrata.tasks import recommendation

        return recommendation.similar(self, item, k)

    def update(self, data, out: str | Path | None = None, *, epochs: int | None = None,
               quiet: bool = True) -> "Run":
        """Continue training on new interactions (new users and items too); returns the updated run."""
        from deepstrata.tasks import recommendation

        return recommendation.update_run(self, data, out=out, epochs=epochs, quiet=quiet)[0]

    def embed(self, texts, per_token: bool = False):
        """One vector per text ``[N, D]``, or with ``per_token`` one per token with the tokens (text runs)."""
        self.require("text-classification", verb="embed", expects="a text run (it takes texts); for the "
                     "features of an image or recommendation run use `deepstrata features RUN --layer NAME`")
        from deepstrata.tasks.text_classification import embed_texts

        return embed_texts(self, texts, per_token)

    def features(self, x, layer: str = "stage2", *, data_dir: str | None = None, with_ids: bool = False):
        """Pooled features ``[N, D]`` of one named layer for ``x``: a tensor of inputs or a data source string.

        A name the model does not have raises ``ConfigError`` listing the ones it has. A
        recommender's ``item_embedding`` gives one row per item; ``with_ids`` returns
        ``(features, ids)``, the user or item id of each row (``None`` for images and texts).
        """
        from deepstrata.inspect.api import features

        return features(self, x, layer, data_dir=data_dir, with_ids=with_ids)

    def inspect(self, data: str | None = None, **kwargs):
        """Probes, CKA, projections and pictures of every layer (see ``deepstrata.inspect.inspect_run``)."""
        from deepstrata.inspect.api import inspect_run

        return inspect_run(self, data, **kwargs)

    def _evaluate_shards(self, source: str) -> dict:
        from deepstrata.metrics import classification_metrics, confusion_matrix

        truth, predicted = _shard_test_split(self, source)
        return {
            "data": source,
            "split": "test split of the shards",
            "examples": int(len(truth)),
            "metrics": classification_metrics(truth, predicted, len(self.classes)),
            "confusion": confusion_matrix(truth, predicted, len(self.classes)).tolist(),
        }

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits as the run scored its test split: with test-time augmentation if it trained with it."""
        from deepstrata.tasks.image_classification import flip_mode, predict_logits

        train = self.config.train
        mirror = flip_mode(train.flip, self.info["spec"]["in_shape"][0]) != "none"
        return predict_logits(self.model, images, self.device, tta=train.tta, mirror=mirror)

    def predict(self, paths: str | Path | list[str | Path]) -> list[Prediction]:
        """Label and probability for each image file (or every image in a folder); for a text run, each string."""
        from deepstrata.data.images import list_image_files, load_image_files

        self.require("image-classification", "text-classification", verb="predict",
                     expects="an image or text run (it labels images or texts); for a recommendation run use "
                             "`deepstrata recommend RUN --user ID` or `deepstrata similar RUN --item ID`")
        if self.task == "text-classification":
            from deepstrata.tasks.text_classification import predict_texts

            return predict_texts(self, paths)
        if isinstance(paths, (str, Path)):
            paths = [paths]
        files: list[Path] = []
        for item in paths:
            if not Path(item).exists():
                raise DataError(f"{item}: no such file or directory; {self.path} is {self.kind}, and predict "
                                "takes image files or folders of images")
            files.extend(list_image_files(item))
        if not files:
            raise DataError(f"{', '.join(map(str, paths))}: no image files found")
        channels, height, width = self.info["spec"]["in_shape"]
        images = load_image_files(files, channels, (height, width))
        probs = torch.softmax(self._logits(images), dim=1)
        best, index = probs.max(dim=1)
        return [
            Prediction(str(path), self.classes[i], float(p)) for path, i, p in zip(files, index.tolist(), best.tolist())
        ]

    def evaluate(self, data: str | None = None, *, data_dir: str | None = None) -> dict:
        """Accuracy and macro-F1 of the kept model on a data source.

        On the source the run was trained on, the run's own test split is used (rebuilt
        from its seed); on a source with an official test split, that split; otherwise
        every example. Class names are matched by name, and the answer says which split.
        """
        from deepstrata.data.images import load_images
        from deepstrata.data.split import split_dataset
        from deepstrata.metrics import classification_metrics, confusion_matrix

        if self.task == "recommendation":
            from deepstrata.tasks.recommendation import evaluate_recommender

            return evaluate_recommender(self, data)
        if data is not None:
            check_source(self, data, "evaluate")
        if self.task == "text-classification":
            from deepstrata.tasks.text_classification import evaluate_text

            return evaluate_text(self, data)
        source = data or self.config.data.source
        same = source == self.config.data.source
        channels, height, width = self.info["spec"]["in_shape"]
        from deepstrata.data.shards import is_shard_dir

        if is_shard_dir(source):
            return self._evaluate_shards(source)
        dataset = load_images(
            source,
            format=self.config.data.format if same else None,
            image_size=height if height == width else None,
            skip_bad=self.config.data.skip_bad,
            data_dir=data_dir or self.config.data.data_dir,
        )
        if same:
            splits = split_dataset(
                dataset, seed=self.config.train.seed,
                val_fraction=self.config.data.val_fraction, test_fraction=self.config.data.test_fraction,
            )
            x, y, which = splits.test_x, splits.test_y, "test split of the run"
        elif dataset.test_x is not None:
            x, y, which = dataset.test_x, dataset.test_y, "official test split"
        else:
            x, y, which = dataset.x, dataset.y, "all examples"
        x = _match_shape(x, channels, height, width, source)
        y = _map_labels(y, dataset.classes, self.classes, source)
        logits = self._logits(x)
        predicted = logits.argmax(1).numpy()
        truth = y.numpy()
        result = classification_metrics(truth, predicted, len(self.classes))
        return {
            "data": source,
            "split": which,
            "examples": int(len(truth)),
            "metrics": result,
            "confusion": confusion_matrix(truth, predicted, len(self.classes)).tolist(),
        }


def _shard_test_split(run: "Run", source: str) -> tuple[np.ndarray, np.ndarray]:
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
        labels = _map_labels(torch.from_numpy(np.ascontiguousarray(labels)), shards.classes, run.classes, source)
        predicted.append(run._logits(torch.from_numpy(np.ascontiguousarray(images))).argmax(1).numpy())
        truth.append(labels.numpy())
    return np.concatenate(truth), np.concatenate(predicted)


TASKS = ("image-classification", "text-classification", "recommendation")
_TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".pq", ".txt")
_LOG_NAMES = ("u.data", "ratings.dat")
_EXPECTS = {
    "image-classification": "images (a named image set such as digits or mnist, an image folder, IDX files, "
                            "CIFAR batches or shards)",
    "text-classification": "labelled texts (a .csv/.tsv/.jsonl/.parquet table, a fastText .txt, or a folder or "
                           "archive of class sub-folders of .txt files)",
    "recommendation": "the run's own interaction log",
}


def source_kind(source: str | Path) -> str | None:
    """What a data source plainly is from its name: an image data set or file, a table, an interaction log, or None."""
    from deepstrata.data import datasets
    from deepstrata.data.images import IMAGE_EXTENSIONS

    text = str(source)
    if (text == "digits" or datasets.canonical_name(text) is not None) and not Path(text).exists():
        return "an image data set"
    name = Path(text).name.lower()
    if name in _LOG_NAMES:
        return "an interaction log"
    if name.endswith(IMAGE_EXTENSIONS):
        return "an image file"
    if name.endswith(_TABLE_SUFFIXES):
        return "a table"
    return None


def check_source(run: "Run", source: str | Path, verb: str) -> None:
    """Refuse a data source that is plainly of another kind than the run's task, before reading it.

    A classification run given a table of another task, or an image run given texts, would
    otherwise fail deep in a reader with a message that does not say the run is the problem.
    """
    kind = source_kind(source)
    wrong = {"image-classification": ("a table", "an interaction log"),
             "text-classification": ("an image data set", "an image file", "an interaction log")}
    if kind in wrong.get(run.task, ()):
        raise DataError(f"{source}: {kind}, but {run.path} is {run.kind}; {verb} --data expects "
                        f"{_EXPECTS[run.task]}")


def _checked_info(info: dict, path: Path) -> dict:
    """``model.json`` with the fields every verb relies on checked, so a damaged one is named, not a KeyError."""
    task = info.get("task", "image-classification")
    if task not in TASKS:
        raise runfiles.damaged(path, f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    spec = runfiles.field(info, "spec", dict, path)
    runfiles.field(spec, "family", str, path, where="spec.")
    if task != "recommendation":
        if len(runfiles.string_list(info, "classes", path)) < 2:
            raise runfiles.damaged(path, "'classes' must name at least 2 classes")
    if task == "image-classification":
        shape = runfiles.field(spec, "in_shape", list, path, where="spec.")
        if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
            raise runfiles.damaged(path, f"spec.in_shape is {shape!r}, expected [channels, height, width]")
    if task == "text-classification":
        text = runfiles.field(info, "text", dict, path)
        runfiles.field(text, "tokenizer", str, path, where="text.")
        runfiles.field(text, "max_length", int, path, where="text.")
    return info


def _match_shape(x: torch.Tensor, channels: int, height: int, width: int, source: str) -> torch.Tensor:
    if x.shape[1] != channels:
        if x.shape[1] == 3 and channels == 1:
            x = x.float().mean(dim=1, keepdim=True).round().to(torch.uint8)
        elif x.shape[1] == 1 and channels == 3:
            x = x.expand(-1, 3, -1, -1).contiguous()
    if tuple(x.shape[-2:]) != (height, width):
        x = torch.nn.functional.interpolate(x.float(), size=(height, width), mode="bilinear", antialias=True)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x


def _map_labels(y: torch.Tensor, data_classes: list[str], run_classes: list[str], source: str) -> torch.Tensor:
    if list(data_classes) == list(run_classes):
        return y
    unknown = [name for name in data_classes if name not in run_classes]
    if unknown:
        raise DataError(
            f"{source}: classes {', '.join(unknown[:5])} are not among the run's classes ({', '.join(run_classes)})"
        )
    table = torch.tensor([run_classes.index(name) for name in data_classes])
    return table[y]


def load(path: str | Path, *, device: str = "cpu") -> Run:
    """Open a run directory written by ``fit``."""
    return Run(path, device=device)


def write_model_info(run_dir: Path, info: dict) -> None:
    ckpt.atomic_write_json(run_dir / MODEL_FILE, info)


def write_run_records(run_dir: Path, info: dict, device: torch.device, seed: int, world_size: int = 1) -> None:
    """``model.json`` (what the model is) and ``provenance.json`` (how to reproduce it); rank 0 writes them."""
    write_model_info(run_dir, info)
    ckpt.atomic_write_json(run_dir / "provenance.json", {**provenance(device, seed), "world_size": world_size})

