"""The text family's config: text-model train defaults, merged with a config (object or YAML) and overrides."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import yaml

from deepstrata.config import RunConfig, TextConfig, TrainConfig, load_config
from deepstrata.data.text import TextDataset
from deepstrata.errors import ConfigError
from deepstrata.families.text.family import TASK
from deepstrata.models.registry import TEXT_MODELS

# Train settings that suit each text model better than the image defaults; used only when
# no config file is given, and any flag or keyword still overrides them. Epochs left out
# are sized from the data (config.resolved_train: about 1,500 steps, 4 to 40 epochs); the
# from-scratch Transformer overfits small sets within a few epochs, so it stops after 3
# epochs without a better validation accuracy (the best weights are kept).
TRAIN_DEFAULTS: dict[str, dict] = {
    "transformer": {"batch_size": 64, "lr": 1e-3, "weight_decay": 0.05, "warmup_fraction": 0.1,
                    "label_smoothing": 0.0, "grad_clip": 1.0, "eval_batch_size": 256, "patience": 3},
    "minilm": {"epochs": 3, "batch_size": 32, "lr": 5e-5, "weight_decay": 0.01, "warmup_fraction": 0.1,
               "label_smoothing": 0.0, "grad_clip": 1.0, "eval_batch_size": 128},
    "minilm-frozen": {"epochs": 30, "batch_size": 128, "lr": 3e-3, "weight_decay": 1e-4, "warmup_fraction": 0.1,
                      "label_smoothing": 0.0, "grad_clip": 1.0, "eval_batch_size": 128},
}
# A transfer usually has few labels: 3 epochs of MiniLM's defaults would be 3 steps at 5 labels per class.
# Epochs are sized from the data (about 900 steps, 4 to 40 epochs) in small batches, at a rate a fresh head
# can learn from (the encoder's layers get 1/100 to ~2/3 of it: engine.layer_schedule), stopping after 5
# epochs without a better validation accuracy. A linear transfer trains a head on features computed once:
# 30 epochs of it cost little (each epoch still checkpoints the whole network). MiniLM from scratch (``text.init: random``, the learning curve's
# "scratch" row) takes the same recipe as its transfer, so that the two rows differ in the weights alone.
TRANSFER_DEFAULTS: dict[str, dict] = {
    "minilm": {"batch_size": 16, "lr": 1e-4, "weight_decay": 0.01, "warmup_fraction": 0.1, "label_smoothing": 0.0,
               "grad_clip": 1.0, "eval_batch_size": 128, "patience": 5},
    "transformer": {"batch_size": 16, "lr": 1e-3, "weight_decay": 0.05, "warmup_fraction": 0.1,
                    "label_smoothing": 0.0, "grad_clip": 1.0, "eval_batch_size": 256, "patience": 5},
    "linear": {"epochs": 30, "batch_size": 16, "lr": 3e-3, "weight_decay": 1e-4, "warmup_fraction": 0.1,
               "label_smoothing": 0.0, "grad_clip": 1.0, "eval_batch_size": 128},
}
DATA_KEYS = {"val_fraction", "test_fraction", "labels_per_class"}
# keyword (and flag) -> transfer.<key>, as for images: ``transfer_from`` is ``--from``
TRANSFER_KEYS = {"transfer_from": "source", "arch": "arch", "up_to": "up_to", "mode": "mode"}
IMAGE_ONLY = {"image_size": "--image-size", "skip_bad": "--skip-bad", "data_dir": "--data-dir"}


def defaults_key(model: str, freeze: bool) -> str:
    return "minilm-frozen" if model == "minilm" and freeze else model


def resolve_text_config(data, model: str | None, config: RunConfig | str | Path | None,
                        overrides: dict) -> RunConfig:
    """Merge defaults, a config (object or YAML), a data object's columns and keyword overrides."""
    overrides = dict(overrides)
    for key, flag in IMAGE_ONLY.items():
        if overrides.pop(key, None) not in (None, False):
            raise ConfigError(f"{flag} applies to image data, not to text")
    text_keys = {f.name for f in fields(TextConfig)}
    text_over = {k: overrides.pop(k) for k in list(overrides) if k in text_keys}
    if "text_format" in overrides:
        text_over["format"] = overrides.pop("text_format")
    if "format" in overrides:
        text_over.setdefault("format", overrides.pop("format"))
    if "depth" in overrides:
        text_over.setdefault("layers", overrides.pop("depth"))
    if "width" in overrides:
        text_over.setdefault("dim", overrides.pop("width"))
    data_over = {k: overrides.pop(k) for k in list(overrides) if k in DATA_KEYS}
    transfer_over = {TRANSFER_KEYS[k]: overrides.pop(k) for k in list(overrides) if k in TRANSFER_KEYS}
    baselines = overrides.pop("baselines", None)
    train_keys = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - train_keys)
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r} for a text run")

    explicit: set[str] | None = None  # train keys a YAML file sets; the text defaults fill the others
    if isinstance(config, (str, Path)):
        raw = yaml.safe_load(Path(config).read_text(encoding="utf-8")) if Path(config).is_file() else None
        explicit = set((raw.get("train") or {}) if isinstance(raw, dict) else {})
        config = load_config(config)
    if config is None:
        explicit = set()
        config = RunConfig(task=TASK)
    transfer = config.override(transfer=transfer_over).transfer
    if transfer.source is not None:
        from deepstrata.families.text.transfer import check_options, source_family

        check_options(transfer.arch)
        model = source_family(transfer.source) or model  # the source is the architecture (read() checks it)
    name = model or (config.model.name if config.model.name in TEXT_MODELS else "transformer")
    if name not in TEXT_MODELS:
        raise ConfigError(f"--model {name}: not a text model; expected one of {', '.join(TEXT_MODELS)}")
    if explicit is not None:
        freeze = bool(text_over.get("freeze", config.text.freeze))
        defaults = TRAIN_DEFAULTS[defaults_key(name, freeze)]
        if transfer.source is not None:
            defaults = TRANSFER_DEFAULTS["linear" if transfer.mode == "linear" else name]
        elif name == "minilm" and text_over.get("init", config.text.init) == "random":
            defaults = TRANSFER_DEFAULTS["minilm"]  # MiniLM from scratch trains as its transfer does: a fair row
        config = config.override(train={k: v for k, v in defaults.items() if k not in explicit})
    source = None
    if isinstance(data, TextDataset):
        source = data.source or "<in-memory texts>"
        for key, value in (("text_column", data.text_column), ("label_column", data.label_column),
                           ("format", data.format or None), ("encoding", data.encoding)):
            if value is not None:
                text_over.setdefault(key, value)
    elif data is not None:
        source = str(data)
    cfg = config.override(data={"source": source, **data_over}, model={"name": name}, train=overrides,
                          text=text_over, baselines=baselines, task=TASK, transfer=transfer_over)
    if cfg.data.source == "digits" and source is None:
        raise ConfigError("a text run needs --data: a CSV/TSV/JSONL/Parquet table, a fastText .txt, "
                          "a folder of class sub-folders or an aclImdb archive")
    if name == "minilm" and cfg.text.max_length > 512:
        raise ConfigError(f"text.max_length: got {cfg.text.max_length}, MiniLM takes at most 512 tokens")
    return cfg
