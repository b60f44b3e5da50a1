"""Full-ranking metrics against cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deepstrata.data.interactions import EvalSet
from deepstrata.recsys_metrics import evaluate_scorer, ranking_metrics, rows_per_batch

SCORES = torch.tensor([
    [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
    [0.1, 0.5, 0.5, 0.2, 0.9, 0.3],
])
HISTORIES = [np.array([0]), np.array([4])]
TARGETS = [np.array([2]), np.array([2, 5])]


def test_hand_computed_case():
    # User 0: item 0 excluded, so the ranking is 1, 2, 3, 4, 5: target 2 is at rank 1 (0-based).
    # User 1: item 4 excluded; 1 and 2 tie at 0.5 (lower index first), then 5, 3, 0:
    # targets 2 and 5 sit at ranks 1 and 2.
    ndcg_0 = 1 / math.log2(3)
    ndcg_1 = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    result = ranking_metrics(SCORES, HISTORIES, TARGETS)
    assert result["hr@10"] == pytest.approx(1.0)
    assert result["ndcg@10"] == pytest.approx((ndcg_0 + ndcg_1) / 2)
    assert result["recall@20"] == pytest.approx(1.0)
    assert result["coverage@10"] == pytest.approx(1.0)  # top lists: {1,2,3,4,5} and {1,2,5,3,0}


def test_misses_beyond_k_and_coverage():
    items = 30
    scores = torch.arange(items, 0, -1, dtype=torch.float32).expand(2, -1).clone()
    # User 0's target is item 12: with item 0 excluded its rank is 11 — outside the top 10, inside the top 20.
    result = ranking_metrics(scores, [np.array([0]), np.array([], dtype=np.int64)], [np.array([12]), np.array([3])])
    assert result["hr@10"] == pytest.approx(0.5)
    assert result["ndcg@10"] == pytest.approx(0.5 * 1 / math.log2(5))  # user 1: target 3 at rank 3
    assert result["recall@20"] == pytest.approx(1.0)
    # Top-10 lists: items 1..10 and 0..9, so 11 of 30 items are ever recommended.
    assert result["coverage@10"] == pytest.approx(11 / 30)


def test_recall_is_over_min_targets_k():
    scores = torch.linspace(1, 0, 50).expand(1, -1).clone()
    targets = [np.arange(0, 50, 2)]  # 25 targets; 10 of them in the top 20
    result = ranking_metrics(scores, [np.array([], dtype=np.int64)], targets)
    assert result["recall@20"] == pytest.approx(10 / 20)
    ideal = sum(1 / math.log2(r + 2) for r in range(10))
    assert result["ndcg@10"] == pytest.approx(sum(1 / math.log2(r + 2) for r in range(0, 10, 2)) / ideal)


def test_batches_do_not_change_the_result():
    rng = np.random.default_rng(0)
    users, items = 37, 23
    scores = torch.from_numpy(rng.normal(size=(users, items)).astype(np.float32))
    histories = [rng.choice(items, size=rng.integers(0, 5), replace=False) for _ in range(users)]
    targets = [rng.choice(np.setdiff1d(np.arange(items), h), size=1 + u % 3, replace=False)
               for u, h in enumerate(histories)]
    ptr = lambda parts: np.concatenate([[0], np.cumsum([len(p) for p in parts])])  # noqa: E731
    eval_set = EvalSet(np.arange(users), ptr(histories), np.concatenate(histories).astype(np.int64),
                       ptr(targets), np.concatenate(targets).astype(np.int64))
    whole = ranking_metrics(scores, histories, targets)
    batched = evaluate_scorer(lambda u, h: scores[u], eval_set, items, batch_rows=5)
    for name, value in whole.items():
        assert batched[name] == pytest.approx(value)
    assert batched["users"] == users
    assert rows_per_batch(1_000_000) == 4 and rows_per_batch(10) == 1024
