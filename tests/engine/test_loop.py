"""The one training loop: learning, schedules, early stopping and exact resumption."""

import dataclasses
import json

import pytest
import torch

from deepstrata.config import TrainConfig
from deepstrata.engine import checkpoint as ckpt
from deepstrata.engine.loop import batch_generator, learning_rate, train
from deepstrata.errors import RunError
from deepstrata.models.cnn import CNN
from deepstrata.families.image.task import ImageClassificationTask
from tests.run_files import checkpoint_file


def blobs(n=256, seed=0):
    """Two classes of 8x8 images told apart by which half is bright: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randint(0, 60, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    top = y == 1
    x[top, :, :4] += 150
    x[~top, :, 4:] += 150
    return x, y


def make(seed=0):
    torch.manual_seed(seed)
    x, y = blobs()
    vx, vy = blobs(64, seed=1)
    model = CNN((1, 8, 8), 2, width=8)
    task = ImageClassificationTask(x, y, vx, vy, num_classes=2, label_smoothing=0.1)
    return model, task


CFG = TrainConfig(epochs=3, batch_size=32, lr=3e-3, device="cpu", seed=0)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_learning_rate_one_cycle_shape():
    cfg = TrainConfig(lr=1.0, warmup_fraction=0.25)
    lrs = [learning_rate(cfg, s, 100) for s in range(100)]
    assert max(lrs) == pytest.approx(1.0)
    assert lrs.index(max(lrs)) == 24
    assert lrs[0] < lrs[10] < lrs[24] and lrs[50] > lrs[99] >= 0.0
    cos = TrainConfig(lr=1.0, schedule="cosine", warmup_fraction=0.0)
    assert learning_rate(cos, 0, 100) == pytest.approx(1.0)
    assert learning_rate(cos, 50, 100) == pytest.approx(0.5)


def test_batch_generator_is_a_pure_function_of_seed_epoch_index():
    a = torch.rand(5, generator=batch_generator(3, 1, 7))
    b = torch.rand(5, generator=batch_generator(3, 1, 7))
    c = torch.rand(5, generator=batch_generator(3, 1, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_train_learns_and_writes_metrics_and_checkpoints(tmp_path):
    model, task = make()
    result = train(model, task, CFG, tmp_path, quiet=True)
    assert result.best_metric > 0.9
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for key in ("epoch", "step", "train_loss", "val_loss", "val_accuracy", "lr", "seconds"):
        assert key in rows[0]
    assert rows[-1]["step"] == 3 * (256 // 32)
    for name in ("latest/weights.safetensors", "latest/train.safetensors", "latest/state.json", "best.safetensors"):
        assert checkpoint_file(tmp_path, name).is_file()


def test_same_seed_same_weights():
    m1, t1 = make()
    m2, t2 = make()
    train(m1, t1, CFG, None, quiet=True)
    train(m2, t2, CFG, None, quiet=True)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k


class Crash(Exception):
    pass


class CrashingTask:
    """Wraps a task and raises after ``after`` training batches, like a killed process."""

    def __init__(self, task, after):
        self.task, self.after, self.primary_metric = task, after, task.primary_metric

    def num_batches(self, batch_size):
        return self.task.num_batches(batch_size)

    def train_batches(self, epoch, batch_size, seed, start=0):
        for batch in self.task.train_batches(epoch, batch_size, seed, start):
            if self.after == 0:
                raise Crash()
            self.after -= 1
            yield batch

    def loss(self, model, batch):
        return self.task.loss(model, batch)

    def validate(self, model, device):
        return self.task.validate(model, device)


# (steps, seconds, crash after N batches, the checkpoint left): each epoch's end (8 steps an epoch);
# also every 5 steps; by time, due at every step (a clock that always says "a minute has passed").
@pytest.mark.parametrize("checkpoint_every,checkpoint_seconds,crash_after,left", [
    (0, 0, 13, 8), (5, 0, 13, 10), (0, 1e-9, 13, 13)])
def test_killed_and_resumed_run_ends_with_the_same_weights(tmp_path, checkpoint_every, checkpoint_seconds,
                                                           crash_after, left):
    cfg = TrainConfig(epochs=3, batch_size=32, device="cpu", seed=0, checkpoint_every=checkpoint_every,
                      checkpoint_seconds=checkpoint_seconds)
    reference, task = make()
    ref_result = train(reference, task, cfg, tmp_path / "ref", quiet=True)
    ref_last = weights(reference)  # best weights are loaded at the end; compare last checkpoints too

    model, task = make()
    with pytest.raises(Crash):
        train(model, CrashingTask(task, crash_after), cfg, tmp_path / "run", quiet=True)
    saved = ckpt.latest_state(tmp_path / "run" / "checkpoints")
    assert saved["step"] == left

    fresh, task = make(seed=123)  # different initial weights: everything must come from the checkpoint
    result = train(fresh, task, cfg, tmp_path / "run", resume=True, quiet=True)
    assert result.steps == ref_result.steps
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, ref_last[k]), k
    ref_rows = (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
    run_rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    strip = lambda rows: [{k: v for k, v in json.loads(r).items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(run_rows) == strip(ref_rows)
    from safetensors.torch import load_file
    for name in ("latest/weights.safetensors", "best.safetensors"):
        a = load_file(str(checkpoint_file(tmp_path / "ref", name)))
        b = load_file(str(checkpoint_file(tmp_path / "run", name)))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_go_by_time_and_the_best_epoch_is_kept_until_one_is_written(tmp_path):
    """The default (a checkpoint per 60 s): a short run writes one, at its end; its best.safetensors
    and metrics.jsonl are those of the run that checkpoints every epoch, and so are its weights."""

    runs = {}
    for seconds in (60.0, 0.0):
        model, task = make()
        cfg = dataclasses.replace(CFG, checkpoint_seconds=seconds)
        # The best validation score at epoch 2 of 3: held in memory, written with epoch 3's checkpoint.
        result = train(model, Scripted(task, [0.5, 0.9, 0.7]), cfg, tmp_path / str(seconds), quiet=True)
        assert result.best_epoch == 2
        runs[seconds] = tmp_path / str(seconds)
    by_time, per_epoch = runs[60.0], runs[0.0]
    steps = sorted(p.name for p in (by_time / "checkpoints").glob("step-*"))
    assert steps == ["step-000000024"]  # one checkpoint: the end (3 epochs of 8 steps)
    from safetensors.torch import load_file
    for name in ("best.safetensors", "latest/weights.safetensors", "latest/train.safetensors"):
        a, b = (load_file(str(checkpoint_file(run, name))) for run in (by_time, per_epoch))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    rows = lambda run: [{k: v for k, v in json.loads(r).items() if k != "seconds"}  # noqa: E731
                        for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows(by_time) == rows(per_epoch) and len(rows(by_time)) == 3


class Scripted:
    """The task with its validation accuracy per epoch given, to choose which epoch is the best."""

    primary_metric = "accuracy"

    def __init__(self, task, accuracies):
        self.task, self.accuracies, self.calls = task, accuracies, 0
        self.num_batches, self.train_batches, self.loss = task.num_batches, task.train_batches, task.loss

    def validate(self, model, device):
        self.calls += 1
        return {**self.task.validate(model, device), "val_accuracy": self.accuracies[self.calls - 1]}


@pytest.mark.parametrize("accuracies, best_epoch, reads", [([0.5, 0.7, 0.9], 3, 0), ([0.5, 0.9, 0.7], 2, 1)])
def test_the_model_ends_with_the_best_weights_read_back_only_when_it_no_longer_holds_them(
        tmp_path, monkeypatch, accuracies, best_epoch, reads):
    from safetensors.torch import load_file

    calls = []
    load_weights = ckpt.load_weights
    monkeypatch.setattr(ckpt, "load_weights", lambda path, model: calls.append(path) or load_weights(path, model))
    model, task = make()
    result = train(model, Scripted(task, accuracies), CFG, tmp_path, quiet=True)
    assert result.best_epoch == best_epoch and len(calls) == reads
    best = load_file(str(tmp_path / "checkpoints" / "best.safetensors"))
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())


def test_resume_before_the_first_checkpoint_starts_from_the_beginning(tmp_path, capsys):
    reference, task = make()
    train(reference, task, CFG, tmp_path / "ref", quiet=True)
    model, task = make()
    train(model, task, CFG, tmp_path / "run", resume=True)
    assert "starting it from the beginning" in capsys.readouterr().err
    assert all(torch.equal(v, weights(reference)[k]) for k, v in model.state_dict().items())


def test_resume_from_damaged_checkpoints_is_a_clear_error(tmp_path):
    model, task = make()
    train(model, task, CFG, tmp_path, quiet=True)
    for path in (tmp_path / "checkpoints").glob("step-*/state.json"):
        path.write_text("{")
    with pytest.raises(RunError, match="no complete checkpoint"):
        train(model, task, CFG, tmp_path, resume=True, quiet=True)


def test_early_stopping_stops_and_keeps_best(tmp_path):
    model, task = make()

    class Flat:
        primary_metric = "accuracy"
        num_batches = task.num_batches
        train_batches = task.train_batches
        loss = task.loss
        calls = 0

        def validate(self, model, device):
            Flat.calls += 1
            return {"val_loss": 1.0, "val_accuracy": 0.5 if Flat.calls > 1 else 0.6}

    cfg = TrainConfig(epochs=10, batch_size=32, device="cpu", patience=2)
    result = train(model, Flat(), cfg, tmp_path, quiet=True)
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1


class PoisonedTask:
    """Wraps a task; from training step ``at`` on (counted from 1) the loss is NaN, or its validation is."""

    def __init__(self, task, at=None, val_nan=False):
        self.task, self.at, self.val_nan, self.primary_metric, self.steps = task, at, val_nan, task.primary_metric, 0

    def num_batches(self, batch_size):
        return self.task.num_batches(batch_size)

    def train_batches(self, epoch, batch_size, seed, start=0):
        return self.task.train_batches(epoch, batch_size, seed, start)

    def loss(self, model, batch):
        self.steps += 1
        loss, correct = self.task.loss(model, batch)
        return (loss * float("nan") if self.at is not None and self.steps >= self.at else loss), correct

    def validate(self, model, device):
        row = self.task.validate(model, device)
        return {**row, "val_loss": float("inf"), "val_accuracy": float("nan")} if self.val_nan else row


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    from deepstrata.errors import TrainingError

    model, task = make()
    cfg = TrainConfig(epochs=3, batch_size=32, device="cpu", seed=0, lr=3e-3, checkpoint_seconds=0)
    with pytest.raises(TrainingError, match=r"epoch 2, step 11: loss is not finite.*lr 0.003"):
        train(model, PoisonedTask(task, at=11), cfg, tmp_path, quiet=True)
    assert ckpt.latest_state(tmp_path / "checkpoints")["step"] == 8  # the end of epoch 1
    for name in ("latest/weights.safetensors", "best.safetensors"):
        from safetensors.torch import load_file

        assert all(torch.isfinite(v.float()).all() for v in load_file(str(checkpoint_file(tmp_path, name))).values())
    assert all(torch.isfinite(v.float()).all() for v in model.state_dict().values()), "stopped before the update"


def test_metrics_jsonl_never_holds_nan_or_infinity(tmp_path):
    model, task = make()
    train(model, PoisonedTask(task, val_nan=True), CFG, tmp_path, quiet=True)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and not any(word in line for line in lines for word in ("NaN", "Infinity"))
    rows = [json.loads(line) for line in lines]
    assert rows[0]["val_loss"] is None and rows[0]["val_accuracy"] is None and rows[0]["train_loss"] > 0
