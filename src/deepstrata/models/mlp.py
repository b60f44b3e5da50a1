"""A multilayer perceptron on raw pixels: the control that has no notion of space.

Set beside the CNN it shows what convolutional structure adds; its layers carry the
same names (``stem``, ``stage1`` …, ``head``) so every inspection tool works on it.
"""

from __future__ import annotations

import math

from torch import nn

from deepstrata.models.base import ClassifierHead, ImageModel


def dense(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU(inplace=True))


class MLP(ImageModel):
    """Layers: ``stem`` (flatten + dense), ``stage1`` … ``stageK`` (dense), ``head``."""

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        num_classes: int,
        *,
        width: int = 32,
        depth: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ) -> None:
        super().__init__()
        hidden = width * 8
        stages = depth if depth is not None else 2
        layers: dict[str, nn.Module] = {"stem": nn.Sequential(nn.Flatten(), dense(math.prod(in_shape), hidden))}
        for index in range(1, stages + 1):
            layers[f"stage{index}"] = dense(hidden, hidden)
        layers["head"] = ClassifierHead(hidden, num_classes, spatial=False)
        self.set_layers(layers, family="mlp", in_shape=in_shape, num_classes=num_classes, width=width,
                        depth=stages, mean=mean, std=std)
