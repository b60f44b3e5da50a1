"""What the training loop is handed for text: length-bucketed batches, and the two loop ``Task`` s.

Batches are bucketed by length: the shuffled training set is cut into pools of 50
batches, each pool is sorted by token count and cut into batches, and the batch order is
shuffled again. A batch is padded only to its own longest text, so on IMDB's long-tailed
lengths most of the compute goes to real tokens. When the pretrained encoder is frozen,
its pooled features are computed once and the loop trains the head on them.

Under torchrun (``deepstrata fit --devices N``) text runs are data-parallel as image runs
are: each process takes a contiguous share of every global batch, validation is split
across processes and its sums all-reduced, and rank 0 alone writes the run. The last
batch of an epoch, whose size the world size need not divide, is split unevenly and each
share's gradient weighted by its size, so N processes take exactly the steps of one.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepstrata.data.tokenizer import pad_batch
from deepstrata.engine import distributed
from deepstrata.engine.devices import autocast
from deepstrata.engine.loop import batch_generator
from deepstrata.errors import ConfigError

POOL_BATCHES = 50
"""Batches per length-sorted pool: large enough to group similar lengths, small enough to stay random."""

# --- batching and inference ---------------------------------------------------------------

def bucketed_batches(lengths: np.ndarray, batch_size: int, generator: torch.Generator,
                     pool: int = POOL_BATCHES) -> list[np.ndarray]:
    """Index batches of similar lengths, in random order: ``ceil(N / batch_size)`` of them."""
    order = torch.randperm(len(lengths), generator=generator).numpy()
    chunk = batch_size * pool
    batches: list[np.ndarray] = []
    for start in range(0, len(order), chunk):
        idx = order[start:start + chunk]
        idx = idx[np.argsort(lengths[idx], kind="stable")]
        batches.extend(idx[i:i + batch_size] for i in range(0, len(idx), batch_size))
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Deterministic batches for inference, longest first, so padding is minimal."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def map_batches(model: nn.Module, ids: list[np.ndarray], device: torch.device, fn: Callable, batch_size: int = 128,
                precision: str = "32") -> list:
    """Apply ``fn(model, ids_tensor)`` to length-sorted batches; results come back in input order."""
    model.eval()
    lengths = np.array([len(i) for i in ids], dtype=np.int64)
    out: list = [None] * len(ids)
    for batch in sorted_batches(lengths, batch_size):
        x = torch.from_numpy(pad_batch([ids[i] for i in batch], getattr(model, "pad_id", 0))).to(device)
        with autocast(device, precision):
            result = fn(model, x)
        for row, index in enumerate(batch.tolist()):
            out[index] = result[row] if not isinstance(result, tuple) else tuple(r[row] for r in result)
    return out


def predict_logits(model: nn.Module, ids: list[np.ndarray], device: torch.device, batch_size: int = 128,
                   precision: str = "32") -> torch.Tensor:
    """Logits ``[N, C]`` (float32, on the CPU) for token id sequences."""
    if not ids:
        return torch.empty(0)
    rows = map_batches(model, ids, device, lambda m, x: m(x).float().cpu(), batch_size, precision)
    return torch.stack(rows)


def pooled_features(model: nn.Module, ids: list[np.ndarray], device: torch.device, batch_size: int = 128,
                    precision: str = "32") -> torch.Tensor:
    """The vector the head classifies, one per text: ``[N, feature_dim]`` float32."""
    rows = map_batches(model, ids, device, lambda m, x: m.forward_features(x).float().cpu(), batch_size, precision)
    return torch.stack(rows) if rows else torch.empty(0, model.feature_dim)


def token_features(model: nn.Module, ids: list[np.ndarray], device: torch.device, batch_size: int = 128,
                   precision: str = "32") -> list[torch.Tensor]:
    """The vector generated for every token of every text: a ``[len_i, D]`` tensor per text."""
    def run(m, x):
        states, mask = m.forward_tokens(x)
        return states.float().cpu(), mask.sum(1).cpu()

    return [states[:int(count)] for states, count in map_batches(model, ids, device, run, batch_size, precision)]


# --- tasks for the loop --------------------------------------------------------------------

def batch_size_error(batch_size: int, world_size: int) -> ConfigError:
    return ConfigError(f"--batch-size {batch_size} is not divisible by {world_size} processes (--devices / torchrun "
                       f"--nproc-per-node); the global batch is split evenly, use a multiple of {world_size}")


def rank_share(size: int, batch_size: int) -> tuple[slice, float]:
    """This process's contiguous part of a global batch of ``size`` examples, and its gradient weight.

    A full batch (``size == batch_size``, which the world size must divide) is split
    evenly with weight 1. The epoch's last, shorter batch may not split evenly: each
    process then weights its mean loss by ``world_size * share / size`` so that DDP's
    average of the processes' gradients is the gradient of the whole batch's mean loss —
    the step one process takes. A share can be empty (fewer examples than processes).
    """
    env = distributed.current()
    world, rank = env.world_size, env.rank
    if world == 1:
        return slice(0, size), 1.0
    if batch_size % world:
        raise batch_size_error(batch_size, world)
    if size % world == 0:
        return distributed.local_share(size), 1.0
    lo, hi = size * rank // world, size * (rank + 1) // world
    return slice(lo, hi), world * (hi - lo) / size


def weighted_loss(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
                  label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy whose value is the share's mean (what the loop logs) and whose
    gradient is ``weight`` times it (see ``rank_share``); an empty share adds nothing."""
    if len(y) == 0:
        return logits.float().sum() * 0.0, torch.zeros((), dtype=torch.long, device=logits.device)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    loss = loss + (weight - 1.0) * (loss - loss.detach())  # value unchanged; gradient scaled by weight
    return loss, (logits.detach().argmax(1) == y).sum()


class TextClassificationTask:
    """Token ids of each training text in memory; batches bucketed by length and padded per batch."""

    primary_metric = "accuracy"

    def __init__(self, train_ids: list[np.ndarray], train_y: np.ndarray, val_ids: list[np.ndarray], val_y: np.ndarray,
                 *, pad_id: int = 0, label_smoothing: float = 0.0, eval_batch_size: int = 128,
                 precision: str = "32") -> None:
        self.train_ids, self.val_ids = train_ids, val_ids
        self.train_y = torch.from_numpy(np.asarray(train_y, dtype=np.int64))
        self.val_y = torch.from_numpy(np.asarray(val_y, dtype=np.int64))
        self.lengths = np.array([len(i) for i in train_ids], dtype=np.int64)
        self.pad_id = pad_id
        self.label_smoothing = label_smoothing
        self.eval_batch_size = eval_batch_size
        self.precision = precision

    @property
    def num_examples(self) -> int:
        return len(self.train_ids)

    def num_batches(self, batch_size: int) -> int:
        return max(1, math.ceil(len(self.train_ids) / batch_size))

    def padded_slots(self, batch_size: int, seed: int = 0) -> int:
        """Token slots one epoch computes (real tokens plus padding), to report bucketing's waste."""
        batches = bucketed_batches(self.lengths, batch_size, batch_generator(seed, 0))
        return int(sum(len(b) * self.lengths[b].max() for b in batches))

    def train_batches(self, epoch: int, batch_size: int, seed: int, start: int = 0) -> Iterator[tuple]:
        """Global batches bucketed by length, each process taking its share (``rank_share``).

        Batches are ``(ids, weight, targets)``; every process draws the same global batches
        (the order depends only on seed and epoch), so N processes see one process's examples.
        """
        batches = bucketed_batches(self.lengths, batch_size, batch_generator(seed, epoch))
        for index in range(start, len(batches)):
            idx = batches[index]
            part, weight = rank_share(len(idx), batch_size)
            local = idx[part]
            # An empty share still runs the model (on a stand-in text, with zero weight) so that
            # every process takes part in DDP's gradient all-reduce.
            texts = [self.train_ids[i] for i in (local if len(local) else idx[:1])]
            ids = torch.from_numpy(pad_batch(texts, self.pad_id))
            yield ids, torch.tensor(weight, dtype=torch.float32), self.train_y[torch.from_numpy(local)]

    def loss(self, model: nn.Module, batch: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        ids, weight, y = batch
        return weighted_loss(model(ids), y, weight, self.label_smoothing)

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Loss and accuracy on the validation split; each process scores every N-th text and
        the sums are added across processes, so no text is counted twice."""
        part = distributed.my_stride()
        ids, y = self.val_ids[part], self.val_y[part]
        logits = predict_logits(model, ids, device, self.eval_batch_size, self.precision)
        return distributed.val_metrics(logits, y, device)


class FrozenFeatureTask:
    """Trains only the head on pooled features of a frozen encoder, computed once beforehand.

    The head is called outside DDP (``loss`` unwraps the model), so under several processes
    every process trains it on the whole global batch: a linear layer on cached features
    costs next to nothing, and the processes stay identical to one process without any
    gradient exchange. (The loop's all-reduced training sums then count every example once
    per process, in numerator and denominator alike, so the logged means are unchanged.)
    The feature extraction before it is what is split across processes (``shared_features``).
    """

    primary_metric = "accuracy"

    def __init__(self, train_features: torch.Tensor, train_y: np.ndarray, val_features: torch.Tensor,
                 val_y: np.ndarray, *, label_smoothing: float = 0.0) -> None:
        self.train_features, self.val_features = train_features, val_features
        self.train_y = torch.from_numpy(np.asarray(train_y, dtype=np.int64))
        self.val_y = torch.from_numpy(np.asarray(val_y, dtype=np.int64))
        self.label_smoothing = label_smoothing

    @property
    def num_examples(self) -> int:
        return len(self.train_features)

    def num_batches(self, batch_size: int) -> int:
        return max(1, math.ceil(len(self.train_features) / batch_size))

    def train_batches(self, epoch: int, batch_size: int, seed: int, start: int = 0) -> Iterator[tuple]:
        order = torch.randperm(len(self.train_features), generator=batch_generator(seed, epoch))
        for index in range(start, self.num_batches(batch_size)):
            idx = order[index * batch_size:(index + 1) * batch_size]
            yield self.train_features[idx], self.train_y[idx]

    def loss(self, model: nn.Module, batch: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        features, y = batch
        logits = distributed.unwrap(model).layers["head"].classify(features)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        return loss, (logits.detach().argmax(1) == y).sum()

    @torch.inference_mode()
    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        model.eval()
        logits = model.layers["head"].classify(self.val_features.to(device)).float().cpu()
        return {"val_loss": F.cross_entropy(logits, self.val_y).item(),
                "val_accuracy": (logits.argmax(1) == self.val_y).float().mean().item()}


def shared_features(model: nn.Module, ids: list[np.ndarray], device: torch.device, batch_size: int = 128,
                    precision: str = "32") -> torch.Tensor:
    """``pooled_features`` with the texts split across processes (every N-th) and gathered on all."""
    if not distributed.current().active:
        return pooled_features(model, ids, device, batch_size, precision)
    mine = torch.arange(len(ids))[distributed.my_stride()]
    part = pooled_features(model, [ids[i] for i in mine.tolist()], device, batch_size, precision)
    full = torch.zeros(len(ids), model.feature_dim, dtype=torch.float32, device=device)
    full[mine.to(device)] = part.to(device)
    return distributed.all_reduce_sum(full).cpu()  # each row is non-zero on one process only: exact
