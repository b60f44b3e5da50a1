"""Data-parallel text runs on CPU: 2 gloo processes against one process.

Every process takes a contiguous share of each global batch; the last, shorter batch is
split unevenly with each share's gradient weighted by its size, so 2 processes take the
steps of one. Weights agree to TOLERANCE: DDP averages gradients across processes and
each process pads its share only to its own longest text, so float sums run in another order.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from deepstrata.engine import checkpoint as ckpt
from deepstrata.engine import distributed
from deepstrata.errors import ConfigError
from deepstrata.families.text.tasks import TextClassificationTask
from deepstrata.cli import main as cli
from tests.families.text.dist_worker import corpus
from tests.families.text.dist_worker import main as worker
from tests.run_files import checkpoint_file

SRC = str(Path(__file__).resolve().parents[3] / "src")
WORKER = str(Path(__file__).with_name("dist_worker.py"))
TOLERANCE = 1e-5


def env() -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in distributed.RANK_VARIABLES}
    return {**clean, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}


def run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def assert_weights_match(reference: dict, other: dict) -> None:
    assert set(reference) == set(other)
    for key, value in reference.items():
        assert torch.allclose(other[key], value, atol=TOLERANCE, rtol=0), \
            f"{key} differs from one process by {(other[key] - value).abs().max():.2e}"


def test_two_gloo_processes_train_a_text_model_as_one_process(tmp_path):
    (tmp_path / "single").mkdir()
    worker(tmp_path / "single")  # the reference, in this process
    run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", WORKER, str(tmp_path / "double")])

    reference = load_file(str(tmp_path / "single" / "rank0.safetensors"))
    rank0 = load_file(str(tmp_path / "double" / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "double" / "rank1.safetensors"))
    assert all(torch.equal(rank0[key], rank1[key]) for key in rank0), "the two ranks ended with different weights"
    assert_weights_match(reference, rank0)

    one = json.loads((tmp_path / "single" / "rank0.json").read_text())
    twos = [json.loads((tmp_path / "double" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert one["world_size"] == 1 and all(two["world_size"] == 2 for two in twos)
    assert twos[0]["tokenizer"] == twos[1]["tokenizer"] == one["tokenizer"]  # BPE training is deterministic
    for two in twos:
        assert two["steps"] == one["steps"] == 2 * 6 and two["best_epoch"] == one["best_epoch"]
        # 7 validation texts split 4 + 3, the sums all-reduced: every text counted once.
        assert two["val_accuracy"] == pytest.approx(one["val_accuracy"], abs=1e-9)
        assert two["val_loss"] == pytest.approx(one["val_loss"], abs=1e-5)
        for a, b in zip(one["history"], two["history"]):
            assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
            assert b["train_accuracy"] == pytest.approx(a["train_accuracy"], abs=1e-9)
            assert b["val_accuracy"] == pytest.approx(a["val_accuracy"], abs=1e-9)


def write_csv(path: Path, n: int) -> Path:
    texts, labels = corpus(n, seed=1)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([text, ("sport", "money", "tech")[label]] for text, label in zip(texts, labels))
    return path


SMALL = ["--epochs", "2", "--dim", "16", "--layers", "1", "--heads", "2", "--max-length", "16", "--vocab-size", "300",
         "--batch-size", "8", "--dropout", "0", "--device", "cpu", "--quiet"]


def test_cli_fit_with_two_devices_writes_one_run(tmp_path):
    # 103 rows split 73 train / 9 val / 21 test: the last batch holds 1 text, so one process
    # gets none, and the validation texts do not split evenly either.
    data = write_csv(tmp_path / "t.csv", 103)
    assert cli(["fit", "--data", str(data), *SMALL, "--no-baselines", "--out", str(tmp_path / "one")]) == 0
    run(["-m", "deepstrata", "fit", "--data", str(data), *SMALL, "--devices", "2", "--out", str(tmp_path / "two")])

    two = tmp_path / "two"
    comparison = json.loads((two / "comparison.json").read_text())
    assert comparison["split"]["train"] == 73 and comparison["split"]["val"] == 9
    rows = {row["name"]: row for row in comparison["rows"]}
    assert rows["transformer"]["kind"] == "learned" and "tfidf_lr" in rows
    assert json.loads((two / "provenance.json").read_text())["world_size"] == 2
    for name in ("config.yaml", "model.json", "tokenizer.json", "report.html", "confusion.json"):
        assert (two / name).is_file(), name
    history = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2]  # written once, by rank 0
    reference = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(reference, history):
        assert b["val_accuracy"] == pytest.approx(a["val_accuracy"], abs=1e-9)
        assert b["val_loss"] == pytest.approx(a["val_loss"], abs=1e-5)
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
    assert (two / "tokenizer.json").read_text() == (tmp_path / "one" / "tokenizer.json").read_text()
    assert_weights_match(load_file(str(tmp_path / "one" / "checkpoints" / "best.safetensors")),
                         load_file(str(two / "checkpoints" / "best.safetensors")))


def test_cli_refuses_a_global_batch_the_processes_cannot_split(tmp_path):
    data = write_csv(tmp_path / "t.csv", 40)
    proc = subprocess.run([sys.executable, "-m", "deepstrata", "fit", "--data", str(data), "--devices", "2",
                           "--batch-size", "7", "--out", str(tmp_path / "r")], capture_output=True, text=True,
                          timeout=120, env=env())
    assert proc.returncode == 2 and "not divisible" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture
def world(monkeypatch):
    """Pretend to be one rank of a world (no process group: only batching is exercised)."""
    def set_rank(rank: int, world_size: int) -> None:
        monkeypatch.setattr(distributed, "_ENV", distributed.DistEnv(rank, world_size, rank, "gloo"))
    return set_rank


@pytest.mark.parametrize("examples", [45, 41])  # last batch of 5 (split 2 + 3) or of 1 (split 1 + 0)
def test_rank_shares_make_up_the_global_batches(world, examples):
    rng = np.random.default_rng(0)
    ids = [np.concatenate([[1], rng.integers(2, 100, size=n)]) for n in rng.integers(0, 12, size=examples)]
    y = rng.integers(0, 3, size=examples)
    task = TextClassificationTask(ids, y, ids[:5], y[:5])
    single = list(task.train_batches(2, 8, seed=1))
    world(0, 2)
    first = list(task.train_batches(2, 8, seed=1))
    world(1, 2)
    second = list(task.train_batches(2, 8, seed=1))
    assert len(single) == len(first) == len(second) == task.num_batches(8)
    for whole, a, b in zip(single, first, second):
        size = len(whole[-1])
        assert torch.equal(torch.cat([a[-1], b[-1]]), whole[-1])  # the same texts, in order
        assert float(whole[1]) == 1.0
        # Each share's weight is 2 x its part of the batch: DDP's average is the whole batch's mean.
        for share in (a, b):
            assert float(share[1]) == pytest.approx(2 * len(share[-1]) / size)
            if len(share[-1]):
                # padded only to the share's own longest text
                assert share[0].shape[0] == len(share[-1]) and share[0].shape[1] <= whole[0].shape[1]
            else:  # an empty share still runs the model on one stand-in text, with weight 0
                assert share[0].shape[0] == 1
    with pytest.raises(ConfigError, match="--batch-size 7 is not divisible by 2 processes"):
        next(task.train_batches(0, 7, seed=1))


def test_weighted_loss_scales_the_gradient_not_the_value():
    from deepstrata.families.text.tasks import weighted_loss

    logits = torch.randn(3, 4, requires_grad=True)
    y = torch.tensor([0, 2, 1])
    plain, correct = weighted_loss(logits, y, torch.tensor(1.0), 0.0)
    (grad_plain,) = torch.autograd.grad(plain, logits)
    scaled, _ = weighted_loss(logits, y, torch.tensor(1.5), 0.0)
    (grad_scaled,) = torch.autograd.grad(scaled, logits)
    assert scaled.item() == plain.item() and int(correct) == int((logits.argmax(1) == y).sum())
    torch.testing.assert_close(grad_scaled, 1.5 * grad_plain)
    empty, none = weighted_loss(logits[:1], y[:0], torch.tensor(0.0), 0.0)
    (grad_empty,) = torch.autograd.grad(empty, logits)
    assert empty.item() == 0.0 and int(none) == 0 and not grad_empty.any()


def test_ranks_draw_their_own_dropout_and_a_crashed_run_resumes_exactly(tmp_path):
    """With dropout each rank draws its own masks; a run that dies after step 9 resumes from
    the step-8 checkpoint, every rank from its own saved random state, to the same weights."""
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", WORKER]
    run([*launch, str(tmp_path / "ref_out"), str(tmp_path / "ref"), "0", "fresh"])
    draws = [(tmp_path / "ref_out" / f"draw{r}.txt").read_text() for r in (0, 1)]
    assert draws[0] != draws[1], "both ranks drew the same random numbers"

    crashed = subprocess.run([sys.executable, *launch, str(tmp_path / "out"), str(tmp_path / "run"), "9", "fresh"],
                             capture_output=True, text=True, timeout=240, env=env())
    assert crashed.returncode != 0
    assert ckpt.latest_state(tmp_path / "run" / "checkpoints")["step"] == 8
    run([*launch, str(tmp_path / "out"), str(tmp_path / "run"), "0", "resume"])
    for name in ("latest/weights.safetensors", "latest/train.safetensors"):
        a = load_file(str(checkpoint_file(tmp_path / "ref", name)))
        b = load_file(str(checkpoint_file(tmp_path / "run", name)))
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), name
    assert "rng.rank1.torch" in load_file(str(checkpoint_file(tmp_path / "ref", "latest/train.safetensors")))
