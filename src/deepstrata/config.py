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
    """Where the data comes from and how it is split."""

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
            if not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
                raise ConfigError(f"data.{key}: got {value!r}, expected a number between 0 and 1")


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
    """Optimisation, schedule and bookkeeping for the one training loop."""

    epochs: int = 15
    batch_size: int = 128
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
    patience: int = 0
    checkpoint_every: int = 0
    eval_batch_size: int = 1024
    threads: int | None = None

    def __post_init__(self) -> None:
        _check_positive("train.epochs", self.epochs)
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
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"train.seed: got {self.seed!r}, expected an integer")
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise ConfigError(f"train.label_smoothing: got {self.label_smoothing!r}, expected 0 <= value < 1")
        if not 0.0 <= float(self.warmup_fraction) < 1.0:
            raise ConfigError(f"train.warmup_fraction: got {self.warmup_fraction!r}, expected 0 <= value < 1")
        if self.threads is not None:
            _check_positive("train.threads", self.threads)


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; saved resolved as ``config.yaml`` in the run directory."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    baselines: bool = True
    task: str = "image-classification"

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
