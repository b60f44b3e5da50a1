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
```
``Run`` reads such a directory; every verb after ``fit`` (evaluate, predict, compare,
inspect …) starts from one.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deepstrata import __version__
from deepstrata.config import RunConfig, load_config
from deepstrata.engine import checkpoint as ckpt
from deepstrata.engine.devices import resolve_device
from deepstrata.errors import DataError, RunError
from deepstrata.models.registry import build_model

MODEL_FILE = "model.json"


def prepare_run_dir(path: Path, *, resume: bool, overwrite: bool) -> Path:
    """Create ``path`` for a new run, refusing to clobber an existing one unless asked."""
    path = Path(path)
    if resume:
        if not (path / "checkpoints" / "last.json").is_file():
            raise RunError(f"{path}: --resume needs a run directory with a checkpoint (checkpoints/last.json not found)")
        return path
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise RunError(f"{path}: run directory already exists and is not empty; use --resume, --overwrite or another --out")
        if not (path / MODEL_FILE).is_file() and not (path / "config.yaml").is_file():
            raise RunError(f"{path}: exists and is not a deepstrata run directory; refusing to overwrite it")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_run_dir(source: str, model: str, root: Path = Path("runs")) -> Path:
    stem = Path(source).name.split(".")[0] or "data"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / f"{stem}-{model}-{stamp}"


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
        try:
            self.info = json.loads(info_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RunError(f"{info_path}: not valid JSON ({err})") from None
        self.config = load_config(self.path / "config.yaml") if (self.path / "config.yaml").is_file() else RunConfig()
        self.device = resolve_device(device)
        self._model: nn.Module | None = None

    @property
    def task(self) -> str:
        return self.info.get("task", "image-classification")

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @property
    def model(self) -> nn.Module:
        """The model with its best weights, built lazily and kept in eval mode."""
        if self._model is None:
            model = build_model(self.info["spec"])
            weights = self.path / "checkpoints" / "best.safetensors"
            if not weights.is_file():
                raise RunError(f"{self.path}: no trained weights (checkpoints/best.safetensors not found); did the run finish an epoch?")
            ckpt.load_weights(weights, model)
            self._model = model.to(self.device).eval()
        return self._model

    def comparison(self) -> dict:
        path = self.path / "comparison.json"
        if not path.is_file():
            raise RunError(f"{self.path}: no comparison.json; the run did not finish")
        return json.loads(path.read_text(encoding="utf-8"))

    def history(self) -> list[dict]:
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

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
        if self.task != "text-classification":
            raise RunError(f"{self.path}: embed takes texts and needs a text run; this run is {self.task}")
        from deepstrata.tasks.text_classification import embed_texts

        return embed_texts(self, texts, per_token)

    def features(self, x, layer: str = "stage2", *, data_dir: str | None = None) -> np.ndarray:
        """Pooled features ``[N, D]`` of one named layer for ``x``: a tensor of inputs or a data source string.

        A name the model does not have raises ``ConfigError`` listing the ones it has.
        """
        from deepstrata.inspect.api import features

        return features(self, x, layer, data_dir=data_dir)

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

        if self.task == "text-classification":
            from deepstrata.tasks.text_classification import predict_texts

            return predict_texts(self, paths)
        if isinstance(paths, (str, Path)):
            paths = [paths]
        files: list[Path] = []
        for item in paths:
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

