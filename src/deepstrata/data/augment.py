"""Image augmentation as pure functions of a batch and a generator (CPU or GPU alike)."""

from __future__ import annotations

import math

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


RESIZED_SCALE = (0.35, 1.0)
RESIZED_RATIO = (3 / 4, 4 / 3)


def random_resized_crop(
    images: torch.Tensor, generator: torch.Generator, total: int | None = None, part: slice = slice(None),
    scale: tuple[float, float] = RESIZED_SCALE, ratio: tuple[float, float] = RESIZED_RATIO,
) -> torch.Tensor:
    """A random box of each image (``scale`` of its area, aspect in ``ratio``) resized back to the image's size.

    The ImageNet training crop, for photos that were scaled down to the input size: the
    object's size and place in a photo vary far more than a few pixels of translation
    cover. The scale starts at 0.35 rather than ImageNet's 0.08, as fast small-resolution
    recipes do: a model trained for a few epochs from scratch cannot afford crops that
    rarely show the object. The boxes are drawn on the CPU from ``generator`` for the
    whole batch of ``total`` and sliced to ``part`` (as ``random_crop``), and applied in
    one ``grid_sample`` (bilinear; a box is never larger than the image, so it is only
    ever enlarged and needs no antialiasing).
    """
    count = total or images.shape[0]
    area = torch.empty(count).uniform_(scale[0], scale[1], generator=generator)
    aspect = torch.empty(count).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator).exp()
    box_w = (area * aspect).sqrt().clamp(max=1.0)  # fractions of the width and height
    box_h = (area / aspect).sqrt().clamp(max=1.0)
    left = torch.rand(count, generator=generator) * (1 - box_w)
    top = torch.rand(count, generator=generator) * (1 - box_h)
    return resized_crop(images, torch.stack([left, top, box_w, box_h], dim=1)[part])


def resized_crop(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each image's box ``(left, top, width, height)``, as fractions of its size, resized to the full size.

    Pixel centres are sampled where ``F.interpolate(..., mode="bilinear", align_corners=False)``
    samples a crop, so a box on whole pixels gives that crop resized — except at the box's
    edges, which blend in the pixels just outside it where interpolate repeats the edge.
    """
    n, c, h, w = images.shape
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = boxes[:, 2], boxes[:, 3]
    theta[:, 0, 2], theta[:, 1, 2] = 2 * boxes[:, 0] + boxes[:, 2] - 1, 2 * boxes[:, 1] + boxes[:, 3] - 1
    grid = F.affine_grid(theta.to(images.device, images.dtype), [n, c, h, w], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
