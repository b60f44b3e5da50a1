"""The small feature API every model family shares.

Like timm's ``forward_features`` / ``forward_intermediates``, every model exposes its
layers by name (``stem``, ``stage1`` … ``head``), so inspection, transfer and embedding
code never needs per-model special cases.
"""

from __future__ import annotations

import torch
from torch import nn

from deepstrata.errors import ConfigError


class ClassifierHead(nn.Module):
    """Pool (for spatial inputs), flatten, then one linear map to the classes.

    Splitting ``pool`` from ``fc`` lets ``forward_features`` return exactly the vector
    the classifier sees, and lets transfer swap ``fc`` for a new label set.
    """

    def __init__(self, in_features: int, num_classes: int, *, spatial: bool, bias: bool = True,
                 scale: float = 1.0) -> None:
        super().__init__()
        self.spatial = spatial
        self.scale = scale  # a fixed temperature on the logits (the whitened CNN's 1/9)
        self.fc = nn.Linear(in_features, num_classes, bias=bias)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial and x.dim() == 4:
            # max over flattened positions, not torch.amax(dim=(2, 3)): under torch.compile with
            # bf16 autocast, amax's backward gave NaN gradients (torch 2.11 CUDA and 2.13 CPU).
            x = x.flatten(2).max(dim=2).values
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(self.pool(x))
        return logits * self.scale if self.scale != 1.0 else logits


class PixelNormalized:
    """Mixin for image models: per-channel mean/std of the training split kept as buffers.

    Saved with the weights, so a loaded model normalises its inputs exactly as in training.
    """

    def register_pixel_stats(self, channels: int, mean: list[float] | None, std: list[float] | None) -> None:
        self.register_buffer("mean", torch.tensor(mean if mean is not None else [0.5] * channels).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std if std is not None else [0.25] * channels).view(1, -1, 1, 1))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class NamedLayerModel(nn.Module):
    """A model that is a chain of named layers ending in ``head`` (a ``ClassifierHead``).

    Subclasses fill ``self.layers`` (an ``nn.ModuleDict`` in forward order), set
    ``self.feature_dim`` (the width of the vector ``head`` classifies) and ``self.spec``,
    a JSON-able dict from which ``registry.build_model`` rebuilds the model.
    ``prepare`` maps the raw input (images as floats in [0, 1]) to what the first layer
    takes, e.g. normalisation with statistics of the training split kept as buffers.
    """

    layers: nn.ModuleDict
    feature_dim: int
    spec: dict

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers.keys())

    def check_layers(self, names: list[str] | tuple[str, ...]) -> None:
        """Raise a clear error naming the layers that do exist."""
        unknown = [name for name in names if name not in self.layers]
        if unknown:
            raise ConfigError(
                f"unknown layer {', '.join(map(repr, unknown))}; this model has: {', '.join(self.layer_names)}"
            )

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare(x)
        for layer in self.layers.values():
            x = layer(x)
        return x

    def forward_intermediates(
        self, x: torch.Tensor, layers: list[str] | tuple[str, ...] | None = None
    ) -> dict[str, torch.Tensor]:
        """Outputs of the named layers (all by default), stopping after the last one asked for."""
        wanted = list(layers) if layers is not None else self.layer_names
        self.check_layers(wanted)
        last = max(self.layer_names.index(name) for name in wanted)
        x = self.prepare(x)
        out: dict[str, torch.Tensor] = {}
        for index, (name, layer) in enumerate(self.layers.items()):
            x = layer(x)
            if name in wanted:
                out[name] = x
            if index == last:
                break
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled feature vector that ``head`` classifies: [N, feature_dim]."""
        x = self.prepare(x)
        for name, layer in self.layers.items():
            if name == "head":
                return layer.pool(x)
            x = layer(x)
        return x

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final linear map for a new label set (used by transfer)."""
        head = self.layers["head"]
        head.fc = nn.Linear(head.fc.in_features, num_classes)
        self.spec = {**self.spec, "num_classes": num_classes}


class ImageModel(PixelNormalized, NamedLayerModel):
    """An image family (CNN, MLP, whitened CNN): pixel statistics, named layers, a spec to rebuild it.

    Subclasses build their layers (ending in a ``ClassifierHead``) and hand them to
    ``set_layers``, which keeps everything the families share in one place.
    """

    def set_layers(self, layers: dict[str, nn.Module], *, family: str, in_shape: tuple[int, int, int],
                   num_classes: int, width: int, depth: int, mean: list[float] | None,
                   std: list[float] | None) -> None:
        self.register_pixel_stats(in_shape[0], mean, std)
        self.layers = nn.ModuleDict(layers)
        self.feature_dim = layers["head"].fc.in_features
        self.spec = {"family": family, "in_shape": list(in_shape), "num_classes": num_classes, "width": width,
                     "depth": depth}
