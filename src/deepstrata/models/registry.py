"""Model families by name: one place that maps a name to a builder.

A model's ``spec`` (saved as ``model.json`` in a run) plus this table is all that is
needed to rebuild it, so no pickled classes are ever stored. Each family registers a
builder ``spec -> nn.Module`` under its ``spec["family"]``; builders import their
module lazily so that optional extras (e.g. the pretrained text encoder) stay optional.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from deepstrata.errors import RunError


def _image(family: str) -> Callable[[dict], nn.Module]:
    def build(spec: dict) -> nn.Module:
        from deepstrata.models.cnn import CNN
        from deepstrata.models.mlp import MLP

        cls = {"cnn": CNN, "mlp": MLP}[family]
        return cls(tuple(spec["in_shape"]), spec["num_classes"], width=spec["width"], depth=spec["depth"])

    return build


# family name -> builder from a saved spec. Families of other tasks add their line here.
BUILDERS: dict[str, Callable[[dict], nn.Module]] = {
    "cnn": _image("cnn"),
    "mlp": _image("mlp"),
}

IMAGE_MODELS: tuple[str, ...] = ("cnn", "mlp")
TEXT_MODELS: tuple[str, ...] = ()
RECOMMEND_MODELS: tuple[str, ...] = ()
# Every name accepted by --model / ModelConfig.name.
MODEL_NAMES: tuple[str, ...] = IMAGE_MODELS + TEXT_MODELS + RECOMMEND_MODELS


def build_image_model(name: str, in_shape, num_classes: int, **kwargs) -> nn.Module:
    from deepstrata.models.cnn import CNN
    from deepstrata.models.mlp import MLP

    return {"cnn": CNN, "mlp": MLP}[name](tuple(in_shape), num_classes, **kwargs)


def build_model(spec: dict) -> nn.Module:
    """Rebuild a model from its saved ``spec`` (weights are loaded separately)."""
    family = spec.get("family")
    if family not in BUILDERS:
        raise RunError(f"model.json: unknown model family {family!r}; known: {', '.join(BUILDERS)}")
    return BUILDERS[family](spec)
