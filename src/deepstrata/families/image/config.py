"""The image family's config: a ``RunConfig`` (object or YAML path) merged with keyword overrides."""

from __future__ import annotations

from pathlib import Path

from deepstrata.config import RunConfig, load_config

DATA_KEYS = {"format", "data_dir", "image_size", "skip_bad", "val_fraction", "test_fraction", "labels_per_class"}
MODEL_KEYS = {"width", "depth"}
# keyword (and flag) -> transfer.<key>: ``transfer_from`` is ``--from`` (``from`` is a Python keyword)
TRANSFER_KEYS = {"transfer_from": "source", "arch": "arch", "up_to": "up_to", "mode": "mode"}


def resolve_image_config(
    config: RunConfig | str | Path | None = None,
    *,
    data: str | None = None,
    model: str | None = None,
    **train_overrides,
) -> RunConfig:
    """Merge a config (object or YAML path) with keyword overrides; ``None`` means "keep"."""
    if isinstance(config, (str, Path)):
        config = load_config(config)
    config = config or RunConfig()
    data_over = {k: train_overrides.pop(k) for k in list(train_overrides) if k in DATA_KEYS}
    model_over = {k: train_overrides.pop(k) for k in list(train_overrides) if k in MODEL_KEYS}
    transfer_over = {TRANSFER_KEYS[k]: train_overrides.pop(k) for k in list(train_overrides) if k in TRANSFER_KEYS}
    baselines = train_overrides.pop("baselines", None)
    return config.override(
        data={"source": data, **data_over},
        model={"name": model, **model_over},
        train=train_overrides,
        transfer=transfer_over,
        baselines=baselines,
    )
