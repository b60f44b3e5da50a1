"""Top-k ranking metrics with full ranking over the whole catalogue.

No sampled negatives: every item a user has not already interacted with is a candidate,
so figures are comparable with the full-ranking literature (sampled metrics can even
reverse the order of two models — Krichene & Rendle, KDD 2020). The items in a user's
history are excluded from their ranking.

Ties are broken by item index (lower first), with a stable sort, so a model that scores
many items equally (popularity) gets a deterministic, not an optimistic, rank.

Definitions, per evaluated user with target set T and 0-based rank r(t):
- HR@k: 1 if any target has r(t) < k.
- NDCG@k: sum over hits of 1/log2(r(t)+2), divided by the ideal sum for min(|T|, k) hits.
- recall@k: hits / min(|T|, k) (equal to HR@k with one target, as in leave-last-out).
- coverage@k: share of the catalogue that appears in at least one user's top-k list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from deepstrata.data.interactions import EvalSet

HR_K, NDCG_K, RECALL_K, COVERAGE_K = 10, 10, 20, 10
METRIC_NAMES = (f"hr@{HR_K}", f"ndcg@{NDCG_K}", f"recall@{RECALL_K}", f"coverage@{COVERAGE_K}")
ScoreFn = Callable[[np.ndarray, list[np.ndarray]], torch.Tensor]
"""``(user indices [B], histories) -> scores [B, num_items]`` (higher is better)."""


def rows_per_batch(num_items: int, budget: int = 4_000_000, most: int = 1024) -> int:
    """Users scored at once so that a [B, num_items] score matrix stays within ``budget`` cells."""
    return max(1, min(most, budget // max(num_items, 1)))


@dataclass
class RankingAccumulator:
    """Sums of per-user metrics over batches; ``result()`` gives means and coverage."""

    num_items: int
    users: int = 0
    hr: float = 0.0
    ndcg: float = 0.0
    recall: float = 0.0
    loss: float = 0.0
    targets: int = 0
    recommended: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.recommended is None:
            self.recommended = np.zeros(self.num_items, dtype=bool)

    def add(self, scores: torch.Tensor, histories: list[np.ndarray], targets: list[np.ndarray]) -> None:
        """Score one batch: ``scores`` [B, num_items], each row's history excluded."""
        scores = scores.detach().float().cpu().clone()
        rows, num_items = scores.shape
        if rows == 0:
            return
        ex_rows = np.repeat(np.arange(rows), [len(h) for h in histories])
        ex_cols = np.concatenate(histories) if histories else np.zeros(0, dtype=np.int64)
        if len(ex_cols):
            scores[torch.from_numpy(ex_rows), torch.from_numpy(ex_cols.astype(np.int64))] = -torch.inf
        t_rows = np.repeat(np.arange(rows), [len(t) for t in targets])
        t_cols = torch.from_numpy(np.concatenate(targets).astype(np.int64))
        t_rows_t = torch.from_numpy(t_rows)
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        rank_of = torch.empty_like(order)
        rank_of.scatter_(1, order, torch.arange(num_items).expand(rows, num_items).contiguous())
        ranks = rank_of[t_rows_t, t_cols].numpy()
        sizes = np.array([len(t) for t in targets])
        gains = np.where(ranks < NDCG_K, 1.0 / np.log2(ranks + 2.0), 0.0)
        dcg = np.bincount(t_rows, weights=gains, minlength=rows)
        ideal_cum = np.cumsum(1.0 / np.log2(np.arange(NDCG_K) + 2.0))
        idcg = ideal_cum[np.minimum(sizes, NDCG_K) - 1]
        hits_hr = np.bincount(t_rows, weights=(ranks < HR_K).astype(float), minlength=rows)
        hits_recall = np.bincount(t_rows, weights=(ranks < RECALL_K).astype(float), minlength=rows)
        self.users += rows
        self.hr += float((hits_hr > 0).sum())
        self.ndcg += float((dcg / idcg).sum())
        self.recall += float((hits_recall / np.minimum(sizes, RECALL_K)).sum())
        top = order[:, :COVERAGE_K]
        valid = torch.gather(scores, 1, top) > -torch.inf
        self.recommended[top[valid].numpy()] = True
        log_probs = F.log_softmax(scores, dim=1)
        self.loss += float(-log_probs[t_rows_t, t_cols].sum())
        self.targets += len(t_rows)

    def result(self) -> dict[str, float]:
        users = max(self.users, 1)
        return {
            f"hr@{HR_K}": self.hr / users,
            f"ndcg@{NDCG_K}": self.ndcg / users,
            f"recall@{RECALL_K}": self.recall / users,
            f"coverage@{COVERAGE_K}": float(self.recommended.mean()) if self.num_items else 0.0,
        }

    def mean_loss(self) -> float:
        """Cross-entropy of the targets under a softmax over the non-excluded scores."""
        return self.loss / max(self.targets, 1)


def ranking_metrics(scores: torch.Tensor, histories: list[np.ndarray], targets: list[np.ndarray]) -> dict[str, float]:
    """Metrics of one score matrix (all users at once); see the module docstring."""
    acc = RankingAccumulator(scores.shape[1])
    acc.add(scores, histories, targets)
    return acc.result()


def evaluate_scorer(score_fn: ScoreFn, eval_set: EvalSet, num_items: int, *, with_loss: bool = False,
                    batch_rows: int | None = None) -> dict[str, float]:
    """Full-ranking metrics of ``score_fn`` on ``eval_set``, scored batch by batch.

    The batch size keeps a [B, num_items] matrix within a few million cells, so a log of
    millions of interactions is scored within memory on a CPU.
    """
    acc = RankingAccumulator(num_items)
    step = batch_rows or rows_per_batch(num_items)
    for start in range(0, len(eval_set), step):
        rows = range(start, min(start + step, len(eval_set)))
        histories = eval_set.histories(rows)
        with torch.inference_mode():
            scores = score_fn(eval_set.users[start:rows.stop], histories)
        acc.add(scores, histories, eval_set.target_lists(rows))
    out = acc.result()
    out["users"] = acc.users
    if with_loss:
        out["loss"] = acc.mean_loss()
    return out
