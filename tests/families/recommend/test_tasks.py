"""What the recommendation tasks feed the training loop: windows, negatives, determinism."""

from __future__ import annotations

import numpy as np
import torch

from deepstrata.data.interactions import InteractionLog, leave_last_out
from deepstrata.models.recsys import MatrixFactorization, SASRec
from deepstrata.families.recommend.tasks import BPRTask, SequenceTask, padded_sequences, training_windows


def small_split():
    rng = np.random.default_rng(0)
    users, items = [], []
    for user in range(12):
        chosen = rng.choice(15, size=4 + user % 6, replace=False)
        users += [user] * len(chosen)
        items += chosen.tolist()
    log = InteractionLog(np.array(users), np.array(items), np.arange(len(users), dtype=float),
                         tuple(map(str, range(12))), tuple(map(str, range(15))), "synthetic", "test")
    return leave_last_out(log)


def test_windows_make_every_event_a_target_once():
    seq = np.arange(10, 17)  # 7 events
    inputs, targets = training_windows([seq], max_len=3)
    flat = targets[targets >= 0].tolist()
    assert sorted(flat) == list(range(11, 17))  # all but the first event are targets, once each
    for row_in, row_t in zip(inputs, targets):
        real = row_t >= 0
        assert torch.equal(row_in[real][1:] - 1, row_t[real][:-1])  # input is the target shifted by one
    assert padded_sequences([np.array([4, 5, 6]), np.array([], dtype=np.int64)], 2).tolist() == [[6, 7], [0, 0]]


def test_sampled_negatives_loss_trains():
    split = small_split()
    torch.manual_seed(0)
    model = SASRec(split.num_items, dim=8, blocks=1, heads=2, max_len=5, dropout=0.0)
    task = SequenceTask(split, 5, negatives=4)
    batch = next(iter(task.train_batches(0, 8, seed=0)))
    assert len(batch) == 3 and batch[1].shape == (4,)
    loss, _ = task.loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and model.item_embedding.weight.grad.abs().sum() > 0
    full, _ = SequenceTask(split, 5).loss(model, next(iter(SequenceTask(split, 5).train_batches(0, 8, seed=0))))
    assert torch.isfinite(full)


def test_bpr_negatives_avoid_positives_and_batches_repeat():
    split = small_split()
    task = BPRTask(split)
    positives = set(zip(split.train_users.tolist(), split.train_items.tolist()))
    first = list(task.train_batches(3, 16, seed=7))
    again = list(task.train_batches(3, 16, seed=7))
    assert len(first) == task.num_batches(16)
    for (u, i, j), (u2, i2, j2) in zip(first, again):
        assert torch.equal(u, u2) and torch.equal(j, j2)
        assert all((user, item) in positives for user, item in zip(u.tolist(), i.tolist()))
        assert not any((user, item) in positives for user, item in zip(u.tolist(), j.tolist()))
    resumed = list(task.train_batches(3, 16, seed=7, start=2))
    assert torch.equal(resumed[0][2], first[2][2])
    model = MatrixFactorization(split.num_users, split.num_items, dim=4)
    loss, _ = task.loss(model, first[0])
    assert torch.isfinite(loss)
    metrics = task.validate(model, torch.device("cpu"))
    assert {"val_loss", "val_ndcg@10"} <= set(metrics)
