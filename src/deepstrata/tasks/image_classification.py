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

from deepstrata.data.augment import crop_padding, random_crop, random_flip
from deepstrata.engine import distributed
from deepstrata.engine.devices import autocast
from deepstrata.engine.loop import batch_generator


def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images scaled to [0, 1]."""
    x = to_float(images)
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1024, precision: str = "32",
    channels_last: bool = False,
) -> torch.Tensor:
    """Logits for uint8 or float images, in eval mode, batch by batch; returned on the CPU as float32."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = to_float(images[start : start + batch_size].to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


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
        flip: bool = False,
        label_smoothing: float = 0.0,
        eval_batch_size: int = 1024,
        precision: str = "32",
        channels_last: bool = False,
    ) -> None:
        self.train_x, self.train_y = train_x, train_y
        self.val_x, self.val_y = val_x, val_y
        self.num_classes = num_classes
        self.augment = augment
        self.flip = flip
        self.padding = crop_padding(*train_x.shape[-2:])
        self.label_smoothing = label_smoothing
        self.eval_batch_size = eval_batch_size
        self.precision = precision
        self.channels_last = channels_last

    def describe_augmentation(self) -> str:
        if not self.augment:
            return "none"
        return f"random crop (pad {self.padding})" + (" + horizontal flip" if self.flip else "")

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
                x = random_crop(x, self.padding, generator, len(idx), part)
                if self.flip:
                    x = random_flip(x, generator, len(idx), part)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.train_y[local]

    def loss(self, model: nn.Module, batch: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        return loss, (logits.detach().argmax(1) == y).sum()

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Loss and accuracy on the validation split; each process scores every N-th example
        and the sums are added across processes, so no example is counted twice."""
        env = distributed.current()
        part = slice(env.rank, None, env.world_size)
        x, y = self.val_x[part], self.val_y[part].cpu()
        logits = predict_logits(model, x, device, self.eval_batch_size, self.precision, self.channels_last)
        sums = torch.tensor([
            F.cross_entropy(logits, y, reduction="sum").item() if len(y) else 0.0,
            float((logits.argmax(1) == y).sum()) if len(y) else 0.0,
            float(len(y)),
        ], dtype=torch.float64, device=device)
        loss_sum, correct, count = distributed.all_reduce_sum(sums).tolist()
        return {"val_loss": loss_sum / max(count, 1), "val_accuracy": correct / max(count, 1)}


def probabilities(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits, dim=1).numpy()
