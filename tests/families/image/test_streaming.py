"""Streaming from shards: coverage per epoch across ranks, determinism, resume, bounded memory, fit."""

import json

import numpy as np
import pytest
import torch

from deepstrata.engine import checkpoint as ckpt
from deepstrata.cli import main
from deepstrata.config import TrainConfig
from deepstrata.data import shards as shards_module
from deepstrata.data.images import ImageDataset, read_digits
from deepstrata.data.shards import open_shards, write_shards
from deepstrata.data.split import split_dataset
from deepstrata.engine.loop import train
from deepstrata.errors import ConfigError, DataError
from deepstrata.models.cnn import CNN
from deepstrata.families.image.task import ImageClassificationTask
from deepstrata.families.image.streaming import ShardedImageTask
from deepstrata.run import load as load_run
from tests.run_files import checkpoint_file


def numbered(n_per_class=200, classes=3):
    """Images that carry their own id in two pixels, so a batch tells which examples it holds."""
    n = n_per_class * classes
    ids = torch.arange(n)
    x = torch.zeros((n, 1, 4, 4), dtype=torch.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = (ids // 256).to(torch.uint8), (ids % 256).to(torch.uint8)
    x[:, 0, 1:] = (ids % 7 * 30).to(torch.uint8)[:, None, None]
    test = torch.full((30, 1, 4, 4), 255, dtype=torch.uint8)
    return ImageDataset(x=x, y=ids % classes, classes=[f"c{i}" for i in range(classes)], test_x=test,
                        test_y=torch.arange(30) % classes, source="numbered")


def ids_of(x):
    pixels = (x * 255).round().long()
    return (pixels[:, 0, 0, 0] * 256 + pixels[:, 0, 0, 1]).tolist()


@pytest.fixture(scope="module")
def even(tmp_path_factory):
    """540 train examples in 6 shards of 90: every world size up to 3 divides them."""
    shards = write_shards(numbered(), tmp_path_factory.mktemp("even"), 90 * (16 + 8), val_fraction=0.1)
    assert [s.count for s in shards.splits["train"].shards] == [90] * 6
    return shards


@pytest.fixture(scope="module")
def ragged(tmp_path_factory):
    """540 train examples in 5 shards: 4 of 128 and one of 28."""
    return write_shards(numbered(), tmp_path_factory.mktemp("ragged"), 128 * (16 + 8), val_fraction=0.1)


def epoch_ids(shards, world, epoch=0, seed=0, batch=60, buffer_size=50, **kwargs):
    per_rank = []
    for rank in range(world):
        task = ShardedImageTask(shards, buffer_size=buffer_size, rank=rank, world_size=world, augment=False, **kwargs)
        batches = list(task.train_batches(epoch, batch, seed))
        assert len(batches) == task.num_batches(batch)
        assert all(len(y) == batch // world for _, y in batches)
        per_rank.append([i for x, _ in batches for i in ids_of(x)])
    return per_rank


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_example_once_per_epoch_across_ranks(even, world):
    train_ids = {i for x, _ in even.splits["train"].chunks(1000) for i in ids_of(torch.from_numpy(x) / 255)}
    per_rank = epoch_ids(even, world)
    seen = [i for ids in per_rank for i in ids]
    assert len(seen) == len(set(seen)) == 540 and set(seen) == train_ids


def test_labels_travel_with_their_images(even):
    task = ShardedImageTask(even, buffer_size=40, augment=False)
    for x, y in task.train_batches(2, 64, seed=5):
        assert y.dtype == torch.int64 and torch.equal(y, torch.tensor(ids_of(x)) % 3)


def test_order_is_deterministic_for_a_seed_and_changes_with_epoch_and_seed(even):
    first = epoch_ids(even, 2)
    assert epoch_ids(even, 2) == first
    assert epoch_ids(even, 2, epoch=1) != first
    assert epoch_ids(even, 2, seed=1) != first
    # Shuffled beyond shard boundaries: the first batch mixes examples of several shards.
    firsts = even.splits["train"].shards
    task = ShardedImageTask(even, buffer_size=200, augment=False)
    x, _ = next(iter(task.train_batches(0, 60, 0)))
    positions = [next(k for k, s in enumerate(firsts) if i in set(ids_of(torch.from_numpy(s.read(0, s.count)) / 255)))
                 for i in ids_of(x)[:20]]
    assert len(set(positions)) > 1


def test_ragged_shards_give_every_rank_the_same_batches_without_duplicates(ragged):
    counts = sorted(s.count for s in ragged.splits["train"].shards)
    assert counts == [28, 128, 128, 128, 128]
    task = ShardedImageTask(ragged, rank=0, world_size=2)
    # The poorest rank holds the 5 // 2 = 2 smallest shards in some epoch: 28 + 128 examples.
    assert task.examples_per_rank() == 156 and task.num_batches(60) == 156 // 30
    for epoch in range(3):
        per_rank = epoch_ids(ragged, 2, epoch=epoch)
        assert len(per_rank[0]) == len(per_rank[1]) == 5 * 30
        seen = per_rank[0] + per_rank[1]
        assert len(set(seen)) == len(seen)
        assert not set(per_rank[0]) & set(per_rank[1])


def test_bad_world_sizes_and_batches_are_clear_errors(ragged):
    with pytest.raises(ConfigError, match="5 shard\\(s\\) for 6 processes.*smaller --shard-size"):
        ShardedImageTask(ragged, rank=0, world_size=6)
    with pytest.raises(ConfigError, match="rank 2 / world_size 2"):
        ShardedImageTask(ragged, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="batch size 61 is not divisible by the 2 processes"):
        ShardedImageTask(ragged, rank=0, world_size=2).num_batches(61)
    with pytest.raises(ConfigError, match="buffer_size"):
        ShardedImageTask(ragged, buffer_size=0)


@pytest.mark.parametrize("rank,world,start", [(0, 1, 3), (1, 2, 4), (0, 1, 0), (0, 2, 5)])
def test_resume_skips_to_the_same_batches(ragged, rank, world, start):
    task = ShardedImageTask(ragged, buffer_size=70, rank=rank, world_size=world, augment=True, flip=True)
    full = list(task.train_batches(1, 40, seed=9))
    resumed = list(task.train_batches(1, 40, seed=9, start=start))
    assert len(resumed) == len(full) - start
    for (a, ya), (b, yb) in zip(full[start:], resumed):
        assert torch.equal(a, b) and torch.equal(ya, yb)


@pytest.mark.parametrize("start", [0, 4])
def test_memory_is_bounded_by_the_buffer(ragged, monkeypatch, start):
    """Instrumented reads: the task never holds more than ``buffer_size`` examples read but not yet yielded."""
    read = {"rows": 0}
    original_read, original_gather = shards_module.Shard.read, shards_module.Shard.gather

    def counting_read(self, begin, stop, out=None):
        read["rows"] += stop - begin
        return original_read(self, begin, stop, out)

    def counting_gather(self, rows, out):
        read["rows"] += len(rows)
        return original_gather(self, rows, out)

    monkeypatch.setattr(shards_module.Shard, "read", counting_read)
    monkeypatch.setattr(shards_module.Shard, "gather", counting_gather)
    buffer_size, batch = 48, 16
    task = ShardedImageTask(ragged, buffer_size=buffer_size, augment=False)
    yielded = start * batch
    for x, _ in task.train_batches(0, batch, seed=0, start=start):
        yielded += len(x)
        assert read["rows"] - yielded <= buffer_size - batch
        assert read["rows"] - (yielded - len(x)) <= buffer_size
    assert yielded == 540 // batch * batch
    # A resumed epoch reads no pixels for the batches it skips: only the buffer it resumes with.
    assert read["rows"] <= 540 - (start * batch if start else 0) + buffer_size


def test_validation_matches_the_in_memory_task(tmp_path):
    digits = read_digits()
    shards = write_shards(digits, tmp_path / "s", "10kB", seed=4)
    splits = split_dataset(digits, seed=4)
    torch.manual_seed(0)
    model = CNN((1, 8, 8), 10, width=8)
    streamed = ShardedImageTask(shards, eval_batch_size=50).validate(model, torch.device("cpu"))
    in_memory = ImageClassificationTask(splits.train_x, splits.train_y, splits.val_x, splits.val_y,
                                        num_classes=10).validate(model, torch.device("cpu"))
    assert streamed["val_accuracy"] == pytest.approx(in_memory["val_accuracy"])
    assert streamed["val_loss"] == pytest.approx(in_memory["val_loss"], rel=1e-5)


def test_validation_chunks_are_shared_out_without_overlap(tmp_path):
    shards = write_shards(read_digits(), tmp_path / "s", "10kB", seed=4)
    task = ShardedImageTask(shards, eval_batch_size=16)
    torch.manual_seed(0)
    model = CNN((1, 8, 8), 10, width=8)
    whole = task.predictions(model, torch.device("cpu"), "val")
    halves = [task.predictions(model, torch.device("cpu"), "val", part, 2) for part in (0, 1)]
    assert len(halves[0][1]) + len(halves[1][1]) == len(whole[1]) == shards.splits["val"].count
    assert abs(len(halves[0][1]) - len(halves[1][1])) <= 16
    assert sorted(np.concatenate([h[1] for h in halves]).tolist()) == sorted(whole[1].tolist())
    assert halves[0][2] + halves[1][2] == pytest.approx(whole[2], rel=1e-6)


def test_empty_val_split_is_named(tmp_path):
    shards = write_shards(numbered(n_per_class=4), tmp_path / "s", "1kB", val_fraction=0.01)
    with pytest.raises(DataError, match="index.json: the val split is empty"):
        ShardedImageTask(shards)


class Crash(Exception):
    pass


class Crashing(ShardedImageTask):
    def __init__(self, *args, after, **kwargs):
        super().__init__(*args, **kwargs)
        self.after = after

    def train_batches(self, epoch, batch_size, seed, start=0):
        for batch in super().train_batches(epoch, batch_size, seed, start):
            if self.after == 0:
                raise Crash()
            self.after -= 1
            yield batch


def test_killed_mid_epoch_and_resumed_through_the_loop_ends_with_the_same_weights(tmp_path, ragged):
    cfg = TrainConfig(epochs=2, batch_size=32, device="cpu", seed=0, checkpoint_every=4)

    def model(seed):
        torch.manual_seed(seed)
        return CNN((1, 4, 4), 3, width=4)

    reference = model(0)
    train(reference, ShardedImageTask(ragged, buffer_size=64), cfg, tmp_path / "ref", quiet=True)
    interrupted = model(0)
    with pytest.raises(Crash):
        train(interrupted, Crashing(ragged, buffer_size=64, after=22), cfg, tmp_path / "run", quiet=True)
    assert ckpt.latest_state(tmp_path / "run" / "checkpoints")["step"] == 20
    resumed = model(1)
    train(resumed, ShardedImageTask(ragged, buffer_size=64), cfg, tmp_path / "run", resume=True, quiet=True)
    from safetensors.torch import load_file

    a = load_file(str(checkpoint_file(tmp_path / "ref", "latest/weights.safetensors")))
    b = load_file(str(checkpoint_file(tmp_path / "run", "latest/weights.safetensors")))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fit_on_digit_shards_end_to_end(tmp_path, capsys):
    shards_dir, run_dir = tmp_path / "shards", tmp_path / "run"
    assert main(["shard", "--data", "digits", "--out", str(shards_dir), "--shard-size", "20kB", "--quiet"]) == 0
    assert main(["fit", "--data", str(shards_dir), "--out", str(run_dir), "--epochs", "2", "--batch-size", "64",
                 "--width", "8", "--device", "cpu", "--quiet"]) == 0
    comparison = json.loads((run_dir / "comparison.json").read_text())
    reference = split_dataset(read_digits(), seed=0)
    assert comparison["split"]["train"] == len(reference.train_y) and comparison["split"]["test"] == len(reference.test_y)
    names = [row["name"] for row in comparison["rows"]]
    assert names[0] == "cnn" and {"hog_lr", "pixels_lr"} <= set(names)
    assert comparison["rows"][0]["metrics"]["accuracy"] > 0.3
    baseline = next(row for row in comparison["rows"] if row["kind"] == "baseline")
    assert baseline["settings"]["sampled_from_shards"]["train"] == [len(reference.train_y)] * 2
    info = json.loads((run_dir / "model.json").read_text())
    assert info["data"]["format"] == "shards" and any("shuffle buffer" in n for n in info["data"]["notes"])
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    assert (run_dir / "report.html").is_file()
    # evaluate streams the shards' own test split and agrees with fit's test score.
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["split"] == "test split of the shards" and evaluated["examples"] == len(reference.test_y)
    assert evaluated["metrics"]["accuracy"] == pytest.approx(comparison["rows"][0]["metrics"]["accuracy"])
    # features and inspect read the shards too: every image, chunk by chunk; a sample by id.
    assert main(["features", str(run_dir), "--layer", "stage1", "--out", str(tmp_path / "f.npy")]) == 0
    feats = np.load(tmp_path / "f.npy")
    assert feats.shape[0] == 1797
    run = load_run(run_dir)
    test = open_shards(shards_dir).splits["test"]
    images, labels = np.empty((test.count, 1, 8, 8), np.uint8), np.empty(test.count, np.int64)
    test.gather(np.arange(test.count), images, labels)
    assert np.allclose(feats[-test.count:], run.features(torch.from_numpy(images), layer="stage1"), atol=1e-5)
    summary = run.inspect(samples=40, tsne=False, write=False)
    assert summary.samples == 40 and "validation + test" in summary.data and "shards" in summary.data
    assert main(["fit", "--data", str(shards_dir), "--out", str(tmp_path / "r2"), "--image-size", "16", "--quiet"]) == 2
    assert "--image-size: shards keep" in capsys.readouterr().err
    (shards_dir / "index.json").write_text("{broken")
    assert main(["fit", "--data", str(shards_dir), "--out", str(tmp_path / "r3"), "--quiet"]) == 2
    assert "index.json:1:2: not valid JSON" in capsys.readouterr().err


def test_open_shards_accepts_a_path(even):
    task = ShardedImageTask(str(even.root))
    assert task.num_examples == 540 and open_shards(even.root).classes == ["c0", "c1", "c2"]


def test_two_processes_each_read_their_own_shards(tmp_path):
    """``fit --data shards/ --devices 2``: gloo on CPU, steps per epoch as documented, rank 0 writes the run."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from deepstrata.engine import distributed

    shards = write_shards(read_digits(), tmp_path / "shards", "20kB")
    env = {**{k: v for k, v in os.environ.items() if k not in distributed.RANK_VARIABLES},
           "PYTHONPATH": str(Path(__file__).resolve().parents[3] / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "deepstrata", "fit", "--data", str(shards.root), "--out",
                           str(tmp_path / "run"), "--epochs", "2", "--width", "8", "--batch-size", "64", "--device",
                           "cpu", "--no-baselines", "--quiet", "--devices", "2"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    counts = sorted(s.count for s in shards.splits["train"].shards)
    steps = sum(counts[: len(counts) // 2]) // 32
    assert [row["step"] for row in rows] == [steps, 2 * steps]
    assert json.loads((tmp_path / "run" / "provenance.json").read_text())["world_size"] == 2
    notes = json.loads((tmp_path / "run" / "model.json").read_text())["data"]["notes"]
    assert any(f"{steps * 64:,} of {shards.splits['train'].count:,} train examples per epoch" in n for n in notes)
    assert (tmp_path / "run" / "comparison.json").is_file()
