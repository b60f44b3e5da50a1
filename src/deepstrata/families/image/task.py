"""Image classification: in-memory uint8 tensors, torch augmentation, cross-entropy.

Images stay uint8 until a batch is drawn (4x less memory than float), then are scaled
to [0, 1]; the model normalises with statistics of the training split. Batches are
drawn by index from tensors held in memory — no DataLoader workers, which on a
2-core machine only compete with the training threads.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepstrata.data.augment import RESIZED_SCALE, crop_padding, random_crop, random_flip, random_resized_crop
from deepstrata.engine import distributed
from deepstrata.engine.devices import autocast
from deepstrata.engine.loop import batch_generator
from deepstrata.errors import ConfigError


def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images scaled to [0, 1]."""
    x = to_float(images)
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()


def tta_views(x: torch.Tensor, mirror: bool) -> list[tuple[float, torch.Tensor]]:
    """Test-time augmentation as (weight, view) pairs: half the weight on the image (and its
    mirror image), half on copies shifted one pixel up-left and down-right (edges reflected)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = [padded[..., :h, :w], padded[..., 2 : h + 2, 2 : w + 2]]
    views = [(0.5, x)] + [(0.25, view) for view in shifted]
    if mirror:
        views = [(weight / 2, v) for weight, view in views for v in (view, view.flip(-1))]
    return views


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1024, precision: str = "32",
    channels_last: bool = False, tta: bool = False, mirror: bool = False,
) -> torch.Tensor:
    """Logits for uint8 or float images, in eval mode, batch by batch; returned on the CPU as float32.

    ``tta`` averages the logits over ``tta_views`` (with mirror images when ``mirror``).
    """
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = to_float(images[start : start + batch_size].to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            if tta:
                logits = sum(weight * model(view).float() for weight, view in tta_views(x, mirror))
            else:
                logits = model(x).float()
        out.append(logits.cpu())
    return torch.cat(out) if out else torch.empty(0)


FLIP_MODES = ("random", "alternate", "none")


def resolve_crop(setting: str) -> str:
    """``train.crop`` resolved: ``auto`` is the padded crop, for photos too, because that is what measured better.

    The ImageNet recipe trains photos on random resized crops, and ``resized`` offers it.
    On the photo benchmark (CIFAR-10 re-rendered as 300-500 px JPEGs, 64 px input, 6
    epochs, 2 seeds; BENCHMARKS.md "Real photos") the padded crop scored 54.9% and the
    resized crop 51.5% (the native 32 px pictures: 54.2%): at the short budgets a CPU
    affords, the stronger augmentation costs more than it gives. Longer training was not
    measured, so the choice stays open (``--crop resized``).
    """
    return "pad" if setting == "auto" else setting


def describe_crop(crop: str, padding: int, pad_mode: str) -> str:
    if crop == "resized":
        return f"random resized crop (scale {RESIZED_SCALE[0]:g}-{RESIZED_SCALE[1]:g} of the area)"
    fill = ", mirrored border" if pad_mode == "reflect" else ""
    return f"random crop (pad {padding}{fill})"


def flip_mode(setting: str, channels: int) -> str:
    """``train.flip`` resolved: ``auto`` mirrors colour photos at random and never mirrors
    grey images, whose classes (digits, letters) mirroring can change."""
    if setting == "auto":
        return "random" if channels == 3 else "none"
    return setting


class ImageClassificationTask:
    """Plugs image data into the training loop; validation reports loss and accuracy."""

    primary_metric = "accuracy"

    def __init__(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        val_x: torch.Tensor,
        val_y: torch.Tensor,
        *,
        num_classes: int,
        augment: bool = True,
        flip: bool | str = False,
        translate: int | None = None,
        translate_fill: str = "zeros",
        crop: str = "pad",
        label_smoothing: float = 0.0,
        eval_batch_size: int = 1024,
        precision: str = "32",
        channels_last: bool = False,
        tta: bool = False,
    ) -> None:
        """``flip``: ``"random"`` (or True) mirrors a random half of each batch;
        ``"alternate"`` mirrors a fixed random half of the data on even epochs and the other
        half on odd ones, so every image is seen both ways within two epochs (airbench's
        alternating flip); ``"none"`` (or False) never mirrors. ``translate`` is the random
        crop's padding in pixels (default: by image size, see ``crop_padding``), filled with
        zeros or, with ``translate_fill="reflect"``, the mirrored image (on CIFAR-10 at small
        scale reflect scored 1.6 points higher, see docs/scaling.md). ``crop="resized"`` replaces the
        padded crop by ``random_resized_crop`` (photos scaled down to the input, see ``resolve_crop``)."""
        self.train_x, self.train_y = train_x, train_y
        self.val_x, self.val_y = val_x, val_y
        self.num_classes = num_classes
        self.augment = augment
        self.flip = {True: "random", False: "none"}.get(flip, flip)
        if self.flip not in FLIP_MODES:
            raise ValueError(f"flip: got {flip!r}, expected one of {', '.join(FLIP_MODES)}")
        self.padding = crop_padding(*train_x.shape[-2:]) if translate is None else translate
        self.tta = tta
        self.crop = crop
        self.pad_mode = {"zeros": "constant", "reflect": "reflect"}[translate_fill]
        if self.crop == "pad" and self.pad_mode == "reflect" and self.padding >= min(train_x.shape[-2:]):
            raise ConfigError(f"train.translate: {self.padding} px mirrored borders need images larger than that; "
                              f"these are {train_x.shape[-2]}x{train_x.shape[-1]}")
        self._flip_halves: dict[int, torch.Tensor] = {}
        self.label_smoothing = label_smoothing
        self.eval_batch_size = eval_batch_size
        self.precision = precision
        self.channels_last = channels_last

    def describe_augmentation(self) -> str:
        if not self.augment:
            return "none"
        flip = {"random": " + horizontal flip", "alternate": " + horizontal flip (alternating by epoch)"}
        return describe_crop(self.crop, self.padding, self.pad_mode) + flip.get(self.flip, "")

    @property
    def num_examples(self) -> int:
        return len(self.train_x)

    def num_batches(self, batch_size: int) -> int:
        return max(1, len(self.train_x) // batch_size)

    def train_batches(self, epoch: int, batch_size: int, seed: int, start: int = 0) -> Iterator[tuple]:
        """Shuffled global batches, each process taking its share.

        ``batch_size`` is the global batch: with N processes each takes a contiguous
        1/N of it, and draws augmentation for the whole batch then keeps its part, so a
        data-parallel run sees exactly the examples and crops of a single-process run.
        The last incomplete batch is dropped so BatchNorm never sees a tiny one.
        """
        order = torch.randperm(len(self.train_x), generator=batch_generator(seed, epoch))
        for index in range(start, self.num_batches(batch_size)):
            idx = order[index * batch_size : (index + 1) * batch_size]
            part = distributed.local_share(len(idx))
            local = idx[part].to(self.train_x.device)
            x = to_float(self.train_x[local])
            if self.augment:
                generator = batch_generator(seed, epoch, index)
                if self.crop == "resized":
                    x = random_resized_crop(x, generator, len(idx), part)
                else:
                    x = random_crop(x, self.padding, generator, len(idx), part, self.pad_mode)
                if self.flip == "random":
                    x = random_flip(x, generator, len(idx), part)
                elif self.flip == "alternate":
                    flipped = (self.flip_half(seed)[idx[part]] ^ bool(epoch % 2)).to(x.device)
                    x = torch.where(flipped[:, None, None, None], x.flip(3), x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.train_y[local]

    def flip_half(self, seed: int) -> torch.Tensor:
        """The fixed random half of the training images that alternating flips mirror on even epochs."""
        if seed not in self._flip_halves:
            draw = torch.rand(len(self.train_x), generator=batch_generator(seed, -1))
            self._flip_halves[seed] = draw < 0.5
        return self._flip_halves[seed]

    def predict(self, model: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Logits as this task scores them (test-time augmentation included when on)."""
        return predict_logits(model, images, device, self.eval_batch_size, self.precision, self.channels_last,
                              tta=self.tta, mirror=self.flip != "none")

    def loss(self, model: nn.Module, batch: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        return loss, (logits.detach().argmax(1) == y).sum()

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Loss and accuracy on the validation split; each process scores every N-th example
        and the sums are added across processes, so no example is counted twice."""
        part = distributed.my_stride()
        if len(self.val_y) == 0:
            return {}  # no validation split (val_fraction 0): the loop keeps the last epoch
        x, y = self.val_x[part], self.val_y[part].cpu()
        return distributed.val_metrics(self.predict(model, x, device), y, device)


def probabilities(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits, dim=1).numpy()
