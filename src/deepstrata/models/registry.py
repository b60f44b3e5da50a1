"""Model families by name: one place that maps a name to a builder.

A model's ``spec`` (saved as ``model.json`` in a run) plus this table is all that is
needed to rebuild it, so no pickled classes are ever stored.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from deepstrata.errors import RunError
from deepstrata.models.cnn import CNN
from deepstrata.models.mlp import MLP

IMAGE_MODELS: dict[str, Callable[..., nn.Module]] = {"cnn": CNN, "mlp": MLP}
MODEL_NAMES = tuple(IMAGE_MODELS)


def build_image_model(name: str, in_shape, num_classes: int, **kwargs) -> nn.Module:
    return IMAGE_MODELS[name](tuple(in_shape), num_classes, **kwargs)


def build_model(spec: dict) -> nn.Module:
    """Rebuild a model from its saved ``spec`` (weights are loaded separately)."""
    family = spec.get("family")
    if family in IMAGE_MODELS:
        return IMAGE_MODELS[family](
            tuple(spec["in_shape"]), spec["num_classes"], width=spec["width"], depth=spec["depth"]
        )
    raise RunError(f"model.json: unknown model family {family!r}; known: {', '.join(IMAGE_MODELS)}")
