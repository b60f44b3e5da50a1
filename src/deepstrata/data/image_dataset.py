"""``ImageDataset``: the one in-memory shape every image reader returns.

It sits in a module of its own so that each reader (folder, IDX, CIFAR, digits) and the
shard writer can build or accept one without importing ``images``, which imports them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ImageDataset:
    """Images as uint8 ``[N, C, H, W]`` (C is 1 or 3), labels int64 ``[N]``, class names.

    ``preprocess`` is how files were brought to the size (``image_preprocess.Preprocess.record()``),
    for the run to record; None for the fixed-size formats and the old squashing read.
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None
    source: str = ""
    format: str = ""
    notes: list[str] = field(default_factory=list)
    preprocess: dict | None = None
