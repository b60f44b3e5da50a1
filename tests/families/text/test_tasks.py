"""The text family's loop ``Task``: length-bucketed batches, exact resumption, validation, inference."""

from __future__ import annotations

import numpy as np
import torch

from deepstrata.engine.loop import batch_generator
from deepstrata.families.text.tasks import TextClassificationTask, bucketed_batches, predict_logits
from deepstrata.models.transformer import TransformerClassifier


def model(**kwargs) -> TransformerClassifier:
    torch.manual_seed(0)
    options = dict(dim=32, layers=2, heads=4, max_length=40, dropout=0.0)
    options.update(kwargs)
    return TransformerClassifier(100, 3, **options).eval()


def test_bucketed_batches_cover_every_example_once_and_group_lengths():
    lengths = np.random.default_rng(0).integers(1, 300, size=1000)
    batches = bucketed_batches(lengths, 32, batch_generator(0, 0))
    assert len(batches) == 32  # ceil(1000 / 32)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert lengths.sum() / padded > 0.9  # random batches would waste about half the slots
    again = bucketed_batches(lengths, 32, batch_generator(0, 0))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


def test_task_batches_resume_exactly_and_validate():
    rng = np.random.default_rng(0)
    ids = [np.concatenate([[1], rng.integers(2, 100, size=n)]) for n in rng.integers(0, 30, size=50)]
    y = rng.integers(0, 3, size=50)
    task = TextClassificationTask(ids, y, ids[:10], y[:10])
    full = list(task.train_batches(1, 8, seed=3))
    tail = list(task.train_batches(1, 8, seed=3, start=4))
    assert task.num_batches(8) == len(full) == 7
    assert all(all(torch.equal(u, v) for u, v in zip(a, b)) for a, b in zip(full[4:], tail))
    net = model()
    loss, correct = task.loss(net, full[0])
    assert loss.ndim == 0 and 0 <= int(correct) <= len(full[0][-1])  # batches end with their targets
    result = task.validate(net, torch.device("cpu"))
    assert set(result) == {"val_loss", "val_accuracy"}
    logits = predict_logits(net, ids, torch.device("cpu"), batch_size=7)
    with torch.no_grad():
        direct = torch.cat([net(torch.from_numpy(i)[None]) for i in ids])
    torch.testing.assert_close(logits, direct, atol=1e-5, rtol=1e-5)
