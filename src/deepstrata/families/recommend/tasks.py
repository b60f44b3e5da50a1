"""What the training loop trains for a recommendation run: the models, the loop tasks, and full-ranking scores.

``BPRTask`` feeds matrix factorisation (user, positive, sampled negative) triples;
``SequenceTask`` feeds the SASRec-style model next-item windows of each user's training
sequence. Both validate by full ranking over the catalogue (``model_scorer``).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepstrata.config import RecommendConfig
from deepstrata.data.interactions import RecSplit
from deepstrata.engine.loop import batch_generator
from deepstrata.errors import DataError
from deepstrata.families.recommend.config import PRIMARY
from deepstrata.models.recsys import MatrixFactorization, SASRec
from deepstrata.recsys_metrics import METRIC_NAMES, ScoreFn, evaluate_scorer


def build_recommender(name: str, num_users: int, num_items: int, rc: RecommendConfig) -> nn.Module:
    if name == "mf":
        return MatrixFactorization(num_users, num_items, dim=rc.dim)
    return SASRec(num_items, dim=rc.dim, blocks=rc.blocks, heads=rc.heads, max_len=rc.max_seq_len,
                  dropout=rc.dropout)


def padded_sequences(histories: list[np.ndarray], max_len: int) -> torch.Tensor:
    """Left-padded [B, L] of the last ``max_len`` items + 1 (0 is padding); L >= 1."""
    length = max(1, min(max_len, max((len(h) for h in histories), default=1)))
    out = np.zeros((len(histories), length), dtype=np.int64)
    for row, history in enumerate(histories):
        tail = history[-length:]
        if len(tail):
            out[row, length - len(tail):] = tail + 1
    return torch.from_numpy(out)


def model_scorer(model: nn.Module, device: torch.device) -> ScoreFn:
    """Full-catalogue scores of a learned model, in eval mode, for users and their histories."""
    max_len = getattr(model, "max_len", 1)

    def score(users: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor:
        model.eval()
        user_t = torch.from_numpy(np.asarray(users, dtype=np.int64)).to(device)
        seq = padded_sequences(histories, max_len).to(device)
        return model.user_scores(user_t, seq).float().cpu()

    return score


class RankingValidation:
    """Shared ``validate``: full-ranking metrics and cross-entropy on the validation split."""

    primary_metric = PRIMARY
    split: RecSplit

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        if not len(self.split.val):
            raise DataError("no user has three or more interactions (or events in the validation period); "
                            "nothing to validate on")
        result = evaluate_scorer(model_scorer(model, device), self.split.val, self.split.num_items, with_loss=True)
        return {"val_loss": result["loss"], **{f"val_{name}": result[name] for name in METRIC_NAMES}}


class BPRTask(RankingValidation):
    """(user, positive, sampled negative) triples for matrix factorisation."""

    def __init__(self, split: RecSplit, reg: float = 0.0) -> None:
        self.split = split
        self.reg = reg
        self.users = torch.from_numpy(split.train_users)
        self.items = torch.from_numpy(split.train_items)
        self.keys = np.unique(split.train_users * split.num_items + split.train_items)

    def num_batches(self, batch_size: int) -> int:
        return max(1, -(-len(self.users) // batch_size))

    def _negatives(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Uniform items the user has not interacted with in training (a few redraws for collisions)."""
        n = self.split.num_items
        negatives = torch.randint(n, (len(users),), generator=generator)
        for _ in range(10):
            keys = users.numpy() * n + negatives.numpy()
            pos = np.searchsorted(self.keys, keys).clip(max=len(self.keys) - 1)
            clash = torch.from_numpy(self.keys[pos] == keys)
            if not clash.any():
                break
            negatives[clash] = torch.randint(n, (int(clash.sum()),), generator=generator)
        return negatives

    def train_batches(self, epoch: int, batch_size: int, seed: int, start: int = 0) -> Iterator[tuple]:
        order = torch.randperm(len(self.users), generator=batch_generator(seed, epoch))
        for index in range(start, self.num_batches(batch_size)):
            idx = order[index * batch_size:(index + 1) * batch_size]
            users = self.users[idx]
            yield users, self.items[idx], self._negatives(users, batch_generator(seed, epoch, index))

    def loss(self, model: nn.Module, batch: tuple) -> tuple[torch.Tensor, None]:
        users, positives, negatives = batch
        return model.bpr_loss(users, positives, negatives, self.reg), None


def training_windows(sequences: list[np.ndarray], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-item windows of every training sequence: inputs [W, L] (item + 1, 0 pad), targets [W, L] (-100 pad).

    A sequence longer than ``max_len + 1`` is cut into several windows from its end, so
    every training event is a target exactly once.
    """
    inputs, targets = [], []
    for seq in sequences:
        end = len(seq)
        while end > 1:
            start = max(0, end - max_len - 1)
            window = seq[start:end]
            pad = max_len - (len(window) - 1)
            inputs.append(np.concatenate([np.zeros(pad, dtype=np.int64), window[:-1] + 1]))
            targets.append(np.concatenate([np.full(pad, -100, dtype=np.int64), window[1:]]))
            if start == 0:
                break
            end = start + 1
    if not inputs:
        raise DataError("no user has two or more training interactions; the sequence model has nothing to learn")
    return torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.stack(targets))


class SequenceTask(RankingValidation):
    """Next-item prediction over each user's training sequence, every position a target.

    ``negatives == 0``: cross-entropy over the full catalogue. Otherwise cross-entropy of
    the true item against ``negatives`` uniform items shared by the batch (accidental
    hits masked), for catalogues too large for a full softmax at every position.
    """

    def __init__(self, split: RecSplit, max_len: int, negatives: int = 0) -> None:
        self.split = split
        self.negatives = negatives
        self.inputs, self.targets = training_windows(split.train_sequences(), max_len)

    def num_batches(self, batch_size: int) -> int:
        return max(1, -(-len(self.inputs) // batch_size))

    def train_batches(self, epoch: int, batch_size: int, seed: int, start: int = 0) -> Iterator[tuple]:
        order = torch.randperm(len(self.inputs), generator=batch_generator(seed, epoch))
        for index in range(start, self.num_batches(batch_size)):
            idx = order[index * batch_size:(index + 1) * batch_size]
            inputs, targets = self.inputs[idx], self.targets[idx]
            used = (inputs != 0).any(0)
            first = int(used.nonzero()[0]) if used.any() else inputs.shape[1] - 1
            inputs, targets = inputs[:, first:], targets[:, first:]
            if self.negatives:
                negs = torch.randint(self.split.num_items, (self.negatives,),
                                     generator=batch_generator(seed, epoch, index))
                yield inputs, negs, targets
            else:
                yield inputs, targets

    def loss(self, model: nn.Module, batch: tuple) -> tuple[torch.Tensor, None]:
        inputs, targets = batch[0], batch[-1]
        states = model.hidden(inputs)
        mask = targets >= 0
        states, targets = states[mask], targets[mask]
        weights = model.item_weights()
        if not self.negatives:
            return F.cross_entropy((states @ weights.T).float(), targets), None
        negs = batch[1]
        positive = (states * weights[targets]).sum(-1, keepdim=True)
        negative = (states @ weights[negs].T).masked_fill(negs[None, :] == targets[:, None], -torch.inf)
        logits = torch.cat([positive, negative], dim=1).float()
        return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device)), None


def make_task(name: str, split: RecSplit, rc: RecommendConfig):
    if name == "mf":
        return BPRTask(split, rc.bpr_reg)
    return SequenceTask(split, rc.max_seq_len, rc.negatives)



def metrics_only(result: dict) -> dict:
    """The metrics of an ``evaluate_scorer`` result, rounded as comparison.json records them."""
    return {name: round(float(result[name]), 6) for name in METRIC_NAMES}
