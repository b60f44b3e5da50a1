"""Image augmentation as pure functions of a batch and a generator (CPU or GPU alike)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(
    images: torch.Tensor, padding: int, generator: torch.Generator, total: int | None = None, part: slice = slice(None),
    mode: str = "constant",
) -> torch.Tensor:
    """Pad by ``padding`` zeros and crop back at a random offset per image, in one gather.

    images: [N, C, H, W]. Offsets are drawn on the CPU from ``generator`` so the result
    does not depend on the device. When ``images`` is this process's ``part`` of a batch
    of ``total`` (data parallel), offsets are drawn for the whole batch and sliced, so
    every image gets the same crop as in a single-process run.
    """
    if padding <= 0:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding), mode=mode)
    offsets = torch.randint(0, 2 * padding + 1, (2, total or n), generator=generator)[:, part].to(images.device)
    rows = (offsets[0][:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (offsets[1][:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_flip(
    images: torch.Tensor, generator: torch.Generator, total: int | None = None, part: slice = slice(None)
) -> torch.Tensor:
    """Mirror a random half of the images left-right; only for data where mirroring keeps the label."""
    flip = (torch.rand(total or images.shape[0], generator=generator)[part] < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def crop_padding(height: int, width: int) -> int:
    """Translation range that suits the image size: 1 px below 16 px, 2 px below 32 px (MNIST), else 4 px (CIFAR)."""
    size = min(height, width)
    return 1 if size < 16 else 2 if size < 32 else 4
