"""Image classification streamed from shards: memory bounded whatever the data set's size.

``ShardedImageTask`` is the ``ImageClassificationTask`` of data that does not fit in
memory. It shares that task's loss, augmentation and prediction code and differs only in
where batches come from:

* **Shard order.** Each epoch the train shards are permuted by ``batch_generator(seed,
  epoch)`` and dealt round-robin to the ranks: rank ``r`` of ``W`` reads shards
  ``r, r + W, r + 2W, ...`` of that order, sequentially, in batch-sized reads.
* **Shuffle buffer.** A rank keeps at most ``buffer_size`` examples. Batch ``i`` takes a
  random batch from the buffer (drawn from ``batch_generator(seed, epoch, i * W + r)``,
  which then drives the augmentation too) and the freed slots are refilled from the
  stream. The writer shuffled the training examples once, so buffer-level mixing is
  enough. Resident memory is the buffer plus one batch; shards are read with positioned
  reads, not mapped, so no shard's pages stay in the process.
* **Ranks.** ``batch_size`` is the global batch; each rank yields ``batch_size / W`` of
  it (an error if ``W`` does not divide it) from its own shards. Shards differ in size (the
  last is short) and ``W`` need not divide their number, so every rank yields the same
  number of batches: ``num_batches`` is what the rank with the fewest examples can fill in
  any epoch (the ``S // W`` smallest shards), and the examples a rank holds beyond that are
  not used in that epoch (a different subset each epoch, since the shard order changes).
  No rank ever waits on another at the end of an epoch. The unused share of an epoch is
  at most about ``2W / S`` for ``S`` shards (20 shards per process keep it under 10%).
  More ranks than shards is an error that says to reshard smaller.
* **Resume.** ``train_batches(..., start)`` replays the first ``start`` draws on example
  ids only (no pixels read), then loads the buffer's examples by id and continues: the
  batches equal those an uninterrupted epoch yields from ``start`` on.
* **Validation** reads the val shards sequentially in chunks of ``eval_batch_size``; with
  several processes each scores every N-th chunk and the sums are added across them
  (``distributed.all_reduce_sum``), so no example is counted twice or skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepstrata.data.augment import crop_padding, random_crop, random_flip, random_resized_crop
from deepstrata.data.image_preprocess import budget_share, memory_budget
from deepstrata.data.shards import Shard, ShardSet, SplitShards, open_shards
from deepstrata.engine import distributed
from deepstrata.engine.loop import batch_generator
from deepstrata.errors import ConfigError, DataError
from deepstrata.families.image.task import ImageClassificationTask, predict_logits, to_float

DEFAULT_BUFFER_EXAMPLES = 16_384
DEFAULT_BUFFER_BYTES = 256 * 2**20
BASELINE_TRAIN_SAMPLE = 10_000
BASELINE_VAL_SAMPLE = 5_000
BASELINE_MAX_TEST_BYTES = 512 * 2**20


class _Stream:
    """One rank's examples for one epoch: its shards, read in order; ids are split-wide."""

    def __init__(self, shards: list[Shard], with_data: bool) -> None:
        self.shards, self.with_data = shards, with_data
        self.position, self.row = 0, 0
        self._labels: np.ndarray | None = None
        self._labels_of = -1

    def take(self, n: int, images: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Up to ``n`` next ids (fewer at the end); with data, their pixels fill ``images[:k]``."""
        ids, labels, done = [], [], 0
        while done < n and self.position < len(self.shards):
            shard = self.shards[self.position]
            k = min(n - done, shard.count - self.row)
            ids.append(np.arange(shard.first + self.row, shard.first + self.row + k, dtype=np.int64))
            if self.with_data:
                shard.read(self.row, self.row + k, images[done:done + k])
                if self._labels_of != self.position:
                    self._labels, self._labels_of = shard.read_labels(), self.position
                labels.append(self._labels[self.row:self.row + k])
            self.row += k
            done += k
            if self.row == shard.count:
                self.position, self.row = self.position + 1, 0
        empty = np.empty(0, dtype=np.int64)
        return (np.concatenate(ids) if ids else empty,
                (np.concatenate(labels) if labels else empty) if self.with_data else None)


class ShuffleBuffer:
    """At most ``capacity`` examples: a draw takes a random batch, and the freed slots are refilled.

    Without data (``images is None``) it tracks example ids only — how a resumed epoch
    skips its first batches without reading their pixels.
    """

    def __init__(self, capacity: int, shape: tuple[int, ...], with_data: bool) -> None:
        self.capacity, self.shape = capacity, shape
        self.ids = np.full(capacity, -1, dtype=np.int64)
        self.labels = np.zeros(capacity, dtype=np.int64)
        self.images = np.empty((capacity, *shape), dtype=np.uint8) if with_data else None
        self.free = np.arange(capacity)

    def refill(self, stream: _Stream) -> None:
        if not len(self.free):
            return
        n = len(self.free)
        contiguous = self.images is not None and self.free[-1] - self.free[0] + 1 == n and bool(
            np.all(np.diff(self.free) == 1))
        if self.images is None:
            target = None
        elif contiguous:
            target = self.images[self.free[0]:self.free[0] + n]
        else:
            target = np.empty((n, *self.shape), dtype=np.uint8)
        ids, labels = stream.take(n, target)
        slots = self.free[: len(ids)]
        self.ids[slots] = ids
        if self.images is not None:
            self.labels[slots] = labels
            if not contiguous:
                self.images[slots] = target[: len(ids)]
        self.free = self.free[len(ids):]

    def draw(self, count: int, generator: torch.Generator) -> np.ndarray:
        """Slots of a random batch of ``count`` (fewer if the buffer holds fewer); they become free,
        and their pixels stay readable until the next ``refill``."""
        valid = np.flatnonzero(self.ids >= 0)
        pick = valid[torch.randperm(len(valid), generator=generator).numpy()[:count]]
        self.ids[pick] = -1
        self.free = np.concatenate([self.free, pick])
        return pick

    def load(self, split: SplitShards) -> None:
        """Read the pixels of the ids held (after an id-only replay)."""
        self.images = np.empty((self.capacity, *self.shape), dtype=np.uint8)
        valid = np.flatnonzero(self.ids >= 0)
        if len(valid):
            images = np.empty((len(valid), *self.shape), dtype=np.uint8)
            labels = np.empty(len(valid), dtype=np.int64)
            split.gather(self.ids[valid], images, labels)
            self.images[valid], self.labels[valid] = images, labels


def default_buffer_size(shape: tuple[int, ...]) -> int:
    """16,384 examples, or fewer when that would take more than 256 MB of pixels or a quarter of the memory budget."""
    example = int(np.prod(shape))
    return budget_share(example, 0.25, max(1, min(DEFAULT_BUFFER_EXAMPLES, DEFAULT_BUFFER_BYTES // example)))


def baseline_sample_sizes(shape: tuple[int, ...]) -> tuple[int, int]:
    """Train and val examples the baselines fit on: 10,000 and 5,000, or what an eighth and a sixteenth of the
    memory budget hold (the baselines' features take a few times the pixels)."""
    example = int(np.prod(shape))
    return (budget_share(example, 0.125, BASELINE_TRAIN_SAMPLE), budget_share(example, 0.0625, BASELINE_VAL_SAMPLE))


def baseline_test_limit() -> int:
    """Bytes of test pixels the baselines may load: 512 MiB, or a quarter of the memory budget."""
    return min(BASELINE_MAX_TEST_BYTES, memory_budget() // 4)


class ShardedImageTask:
    """Plugs a shard directory into the training loop; see the module docstring for the order of batches."""

    primary_metric = "accuracy"
    loss = ImageClassificationTask.loss
    describe_augmentation = ImageClassificationTask.describe_augmentation

    def __init__(
        self,
        shards: ShardSet | str | Path,
        *,
        buffer_size: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        augment: bool = True,
        flip: bool = False,
        crop: str = "pad",
        label_smoothing: float = 0.0,
        eval_batch_size: int = 1024,
        precision: str = "32",
        channels_last: bool = False,
    ) -> None:
        self.shards = shards if isinstance(shards, ShardSet) else open_shards(shards)
        if not isinstance(world_size, int) or world_size < 1 or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank!r} / world_size {world_size!r}: expected 0 <= rank < world_size")
        self.train, self.val = self.shards.splits["train"], self.shards.splits["val"]
        manifest = self.shards.root / "index.json"
        if self.train.count == 0:
            raise DataError(f"{manifest}: the train split is empty")
        if self.val.count == 0:
            raise DataError(f"{manifest}: the val split is empty; reshard with a larger --val-fraction")
        if len(self.train.shards) < world_size:
            raise ConfigError(f"{manifest}: the train split has {len(self.train.shards)} shard(s) for {world_size} "
                              "processes; each process reads whole shards, so reshard with a smaller --shard-size "
                              f"(at least {world_size} train shards)")
        if buffer_size is not None and (not isinstance(buffer_size, int) or buffer_size < 1):
            raise ConfigError(f"buffer_size: got {buffer_size!r}, expected a positive number of examples")
        self.shape = tuple(self.shards.image_shape)
        self.buffer_size = buffer_size or default_buffer_size(self.shape)
        self.rank, self.world_size = rank, world_size
        self.num_classes = len(self.shards.classes)
        self.augment = augment
        self.flip = "random" if flip else "none"  # alternating flips and mirrored borders are in-memory only
        self.pad_mode = "constant"
        self.padding = crop_padding(*self.shape[-2:])
        self.crop = crop
        self.label_smoothing = label_smoothing
        self.eval_batch_size = eval_batch_size
        self.precision = precision
        self.channels_last = channels_last

    @property
    def num_examples(self) -> int:
        return self.train.count

    def local_batch_size(self, batch_size: int) -> int:
        if batch_size % self.world_size:
            raise ConfigError(f"batch size {batch_size} is not divisible by the {self.world_size} processes; "
                              f"use a multiple of {self.world_size}")
        return batch_size // self.world_size

    def examples_per_rank(self) -> int:
        """Examples the poorest rank can hold in any epoch: the ``S // W`` smallest shards."""
        counts = sorted(shard.count for shard in self.train.shards)
        return sum(counts[: len(counts) // self.world_size])

    def num_batches(self, batch_size: int) -> int:
        return max(1, self.examples_per_rank() // self.local_batch_size(batch_size))

    def rank_shards(self, epoch: int, seed: int) -> list[Shard]:
        order = torch.randperm(len(self.train.shards), generator=batch_generator(seed, epoch)).tolist()
        return [self.train.shards[i] for i in order[self.rank::self.world_size]]

    def train_batches(self, epoch: int, batch_size: int, seed: int, start: int = 0) -> Iterator[tuple]:
        """This rank's batches ``(x float [b, C, H, W] in [0, 1], y int64 [b])``, from batch ``start`` on."""
        local = self.local_batch_size(batch_size)
        stream = _Stream(self.rank_shards(epoch, seed), with_data=start == 0)
        buffer = ShuffleBuffer(max(self.buffer_size, local), self.shape, with_data=start == 0)
        for index in range(self.num_batches(batch_size)):
            if index == start and buffer.images is None:
                buffer.load(self.train)
                stream.with_data = True
            buffer.refill(stream)
            generator = batch_generator(seed, epoch, index * self.world_size + self.rank)
            pick = buffer.draw(local, generator)
            if index < start:
                continue
            x = to_float(torch.from_numpy(buffer.images[pick]))
            y = torch.from_numpy(buffer.labels[pick].copy())
            if self.augment:
                x = (random_resized_crop(x, generator) if self.crop == "resized"
                     else random_crop(x, self.padding, generator))
                if self.flip == "random":
                    x = random_flip(x, generator)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    def predictions(self, model: nn.Module, device: torch.device, split: str = "test", part: int = 0,
                    parts: int = 1):
        """Predicted and true labels (int64 ``[n]``) and the summed cross-entropy of a split, read sequentially;
        with ``parts`` > 1 only chunks ``part``, ``part + parts``, ... (one process's share)."""
        predicted, truth, loss_sum = [], [], 0.0
        for images, labels in self.shards.splits[split].chunks(self.eval_batch_size, part, parts):
            logits = predict_logits(model, torch.from_numpy(images), device, self.eval_batch_size, self.precision,
                                    self.channels_last)
            y = torch.from_numpy(labels)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            predicted.append(logits.argmax(1).numpy())
            truth.append(labels)
        empty = np.empty(0, dtype=np.int64)
        return (np.concatenate(predicted) if predicted else empty, np.concatenate(truth) if truth else empty,
                loss_sum)

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        env = distributed.current()
        predicted, truth, loss_sum = self.predictions(model, device, "val", env.rank, env.world_size)
        return distributed.val_metrics_from_sums(loss_sum, float((predicted == truth).sum()), len(truth), device)

    def sample(self, split: str, limit: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A seeded random sample of at most ``limit`` examples of a split (all of it, in order, if smaller)."""
        part = self.shards.splits[split]
        ids = (np.arange(part.count) if part.count <= limit
               else np.sort(np.random.default_rng([seed, 11]).choice(part.count, size=limit, replace=False)))
        images = np.empty((len(ids), *self.shape), dtype=np.uint8)
        labels = np.empty(len(ids), dtype=np.int64)
        part.gather(ids, images, labels)
        return torch.from_numpy(images), torch.from_numpy(labels)
