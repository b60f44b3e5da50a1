"""A recommendation run's config: its defaults, the options it takes, and reading and splitting its log."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from deepstrata.config import ModelConfig, RecommendConfig, RunConfig, TrainConfig, load_config
from deepstrata.data.interactions import InteractionLog, RecSplit, read_interactions, read_raw_log, split_log
from deepstrata.errors import ConfigError
from deepstrata.families.recommend.family import TASK
from deepstrata.models.registry import RECOMMEND_MODELS

PRIMARY = "ndcg@10"
LOG_FILE, VOCAB_FILE = "interactions.npz", "vocab.json"
DEFAULT_MODEL = "sasrec"

# Training defaults per family when no config says otherwise (the image defaults do not fit:
# embeddings want no label smoothing, larger batches for BPR, and many short epochs).
TRAIN_DEFAULTS: dict[str, dict] = {
    "sasrec": {"epochs": 30, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.0, "schedule": "cosine",
               "warmup_fraction": 0.05, "label_smoothing": 0.0, "grad_clip": 1.0, "patience": 10},
    "mf": {"epochs": 40, "batch_size": 1024, "lr": 5e-3, "weight_decay": 0.0, "schedule": "cosine",
           "warmup_fraction": 0.05, "label_smoothing": 0.0, "grad_clip": 0.0, "patience": 8},
}


def resolve_recommend_config(config: RunConfig | str | Path | None, data, model: str | None,
                             overrides: dict) -> RunConfig:
    """Merge a config with keyword overrides; recommendation defaults where neither says.

    ``width`` (or ``dim``) is the embedding size and ``depth`` (or ``layers``) the number
    of Transformer blocks here. Image-only options are refused by name rather than ignored.
    """
    if isinstance(config, (str, Path)):
        config = load_config(config)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    name = model or (config.model.name if config is not None and config.task == TASK else DEFAULT_MODEL)
    if name not in RECOMMEND_MODELS:
        raise ConfigError(f"--model: {name!r} is not a recommendation model; expected one of "
                          f"{', '.join(RECOMMEND_MODELS)}")
    if config is None:
        config = RunConfig(model=ModelConfig(name=name), train=TrainConfig(**TRAIN_DEFAULTS[name]), task=TASK)
    rec_keys = {f.name for f in dataclasses.fields(RecommendConfig)}
    rec = {k: overrides.pop(k) for k in list(overrides) if k in rec_keys}
    if "width" in overrides:
        rec["dim"] = overrides.pop("width")
    for alias in ("depth", "layers"):
        if alias in overrides:
            rec["blocks"] = overrides.pop(alias)
    if "format" in overrides:
        rec["interactions_format"] = overrides.pop("format")
    image_only = sorted(k for k in overrides if k in ("image_size", "skip_bad", "augment", "channels_last",
                                                      "data_dir", "val_fraction", "test_fraction"))
    if image_only:
        raise ConfigError(f"options {', '.join(image_only)} do not apply to recommendation")
    baselines = overrides.pop("baselines", None)
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(k for k in overrides if k not in train_keys)
    if unknown:
        raise ConfigError(f"unknown option(s) for recommendation: {', '.join(unknown)}")
    source = str(data) if data is not None else (config.data.source if config.task == TASK else None)
    if source is None:
        raise ConfigError("recommendation needs --data (an interaction log: CSV, TSV, Parquet, u.data, ratings.dat)")
    return config.override(data={"source": source}, model={"name": name}, train=overrides, recommend=rec,
                           baselines=baselines, task=TASK)


def read_log(source: str, rc: RecommendConfig, raw: bool = False):
    """The interaction log at ``source`` as ``rc`` says to read it (``raw``: ids not yet indexed, for ``update``)."""
    reader = read_raw_log if raw else read_interactions
    return reader(source, user_column=rc.user_column, item_column=rc.item_column, rating_column=rc.rating_column,
                  time_column=rc.time_column, min_rating=rc.min_rating, format=rc.interactions_format)


def split_events(log: InteractionLog, rc: RecommendConfig) -> RecSplit:
    """The run's split of ``log``: leave-last-out or temporal, as ``rc`` says."""
    return split_log(log, rc.split, val_fraction=rc.temporal_val_fraction, test_fraction=rc.temporal_test_fraction)
