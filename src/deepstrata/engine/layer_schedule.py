"""Which layers train, when, and how fast, when a network's layers are reused on a new task.

A transfer mode is turned into the loop's three per-layer controls (``train.frozen``,
``train.unfreeze_at``, ``train.layer_lr_scale``; see ``TrainConfig``), so the schedule is
plain config: saved in the run's ``config.yaml``, shown there, and repeated exactly by
``--resume``.

- ``linear``: the reused layers are frozen (weights, BatchNorm statistics, dropout) and
  only the new layers learn: a linear probe when the new part is the head.
- ``finetune``: everything learns, earlier layers more slowly (fastai's ``lr_mult`` /
  discriminative learning rates): the reused layers' rates rise geometrically from
  1/100 at the first to just under 1 at the last; the new layers learn at the full rate.
  Early layers hold general features that a new task needs least to change.
- ``gradual``: the ``finetune`` rates, and the reused layers unfreeze from the top down
  (ULMFiT's gradual unfreezing): the new layers learn alone first, so their random
  start sends no large gradients into the reused ones, then one more reused layer joins
  every ``step`` epochs.
"""

from __future__ import annotations

from deepstrata.config import TRANSFER_MODES
from deepstrata.errors import ConfigError


def transfer_schedule(layer_names: list[str], reused: list[str], mode: str, epochs: int) -> dict:
    """The train config overrides ``{"frozen": [...], "unfreeze_at": {...}, "layer_lr_scale": {...}}`` for ``mode``.

    ``layer_names`` are the model's named layers in forward order; ``reused`` those
    carried over from the source network (taken in the model's order). Over the ``R``
    reused layers, layer ``i`` (from 0) learns at ``10 ** (-2 * (R - i) / R)`` times the
    rate under ``finetune`` and ``gradual``; every other layer at 1. Under ``gradual``
    the last reused layer starts training at epoch ``step``, the one before it at
    ``2 * step`` and so on, with ``step = max(1, epochs // (R + 1))``, each capped at
    ``epochs - 1`` so that every layer trains for at least one epoch.
    """
    if mode not in TRANSFER_MODES:
        raise ConfigError(f"transfer mode: got {mode!r}, expected one of {', '.join(TRANSFER_MODES)}")
    unknown = [name for name in reused if name not in layer_names]
    if unknown:
        raise ConfigError(f"transfer: unknown reused layer {', '.join(map(repr, unknown))}; "
                          f"this model has: {', '.join(layer_names)}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"transfer: got epochs {epochs!r}, expected a positive integer")
    ordered = [name for name in layer_names if name in reused]
    count = len(ordered)
    if mode in ("linear", "gradual") and count and count == len(layer_names):
        raise ConfigError(f"transfer mode {mode}: every layer is reused ({', '.join(layer_names)}), so nothing "
                          "new would train first; use finetune, or reuse fewer layers")
    if mode == "linear":
        return {"frozen": ordered, "unfreeze_at": {}, "layer_lr_scale": {}}
    scales = {name: 1.0 for name in layer_names}
    for index, name in enumerate(ordered):
        scales[name] = 10 ** (-2 * (count - index) / count)
    unfreeze_at: dict[str, int] = {}
    if mode == "gradual":
        step = max(1, epochs // (count + 1))
        for rank, name in enumerate(reversed(ordered), start=1):
            unfreeze_at[name] = min(rank * step, epochs - 1)
    return {"frozen": [], "unfreeze_at": unfreeze_at, "layer_lr_scale": scales}


def reused_layers(layer_names: list[str], up_to: str | None, source: str) -> list[str]:
    """The layers of a transfer's source that keep their weights: every layer through ``up_to`` (default: every
    layer before the head, the old task's classifier). ``source`` names the network in the refusals."""
    names = [name for name in layer_names if name != "head"]
    if up_to is None:
        return names
    if up_to == "head":
        raise ConfigError("--up-to head: the head is the old task's classifier; name a layer before it "
                          f"({', '.join(names)})")
    if up_to not in names:
        raise ConfigError(f"--up-to {up_to}: {source} has no such layer; it has {', '.join(names)}")
    return names[: names.index(up_to) + 1]
