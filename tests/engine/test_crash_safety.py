"""A CLI fit killed at any instant — inside a checkpoint write or between them — resumes bit for bit.

Each case starts a real ``deepstrata fit`` process and stops it: with SIGKILL at a named
point of the checkpoint protocol (``DEEPSTRATA_FAULT``, see ``engine.faults``), with
SIGKILL at a random time, or with SIGTERM / SIGINT (preemption, Ctrl-C). The run is
then resumed with ``--resume`` and everything it leaves — metrics, the test-split scores,
the last checkpoint's weights and optimizer state, the kept best weights — must equal an
uninterrupted run's exactly.

Resumes run in this process (the imports are paid once); the killed fits are
subprocesses, two at a time.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deepstrata.cli import main
from deepstrata.engine import checkpoint as ckpt
from tests.run_files import checkpoint_file

SRC = str(Path(__file__).resolve().parents[2] / "src")
# digits: 1,295 training images, batch 128 -> 10 steps an epoch, 30 in all; checkpoints at steps
# 4, 8, 10 (epoch end), 12, 16, 20 (epoch end), 24, 28, 30 (epoch end): --checkpoint-seconds 0 keeps
# every epoch's end (the default goes by time, which these few seconds would never reach).
ARGS = ["--data", "digits", "--epochs", "3", "--width", "8", "--batch-size", "128", "--checkpoint-every", "4",
        "--checkpoint-seconds", "0",
        "--device", "cpu", "--no-baselines", "--quiet", "--threads", "1", "--seed", "3"]
# Every step of the checkpoint protocol, each at a checkpoint of another kind (mid-epoch, epoch end).
FAULT_POINTS = ["step:7", "checkpoint:weights:2", "checkpoint:train:3", "checkpoint:state:4", "checkpoint:renamed:3",
                "checkpoint:pointer:5", "checkpoint:best:6", "epoch:metrics:2"]


def _env(**extra) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "DEEPSTRATA_FAULT")}
    # Not OMP_NUM_THREADS: with it set, torch sums the training loss in another order than this
    # process does with --threads 1 alone (a last-bit difference), and resumes run in this process.
    clean.pop("OMP_NUM_THREADS", None)
    return {**clean, "PYTHONPATH": SRC, **extra}


def start_fit(out: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "deepstrata", "fit", *ARGS, "--out", str(out)], env=_env(**env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(out: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and ckpt.pointed(out / "checkpoints") is None:
        time.sleep(0.01)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("crash") / "ref"
    try:
        assert main(["fit", *ARGS, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def resume(out: Path) -> int:
    threads = torch.get_num_threads()
    try:
        return main(["fit", "--resume", "--out", str(out), "--quiet"])
    finally:
        torch.set_num_threads(threads)


def assert_same_run(ref: Path, run: Path) -> None:
    strip = lambda path: [{k: v for k, v in json.loads(line).items() if k != "seconds"}  # noqa: E731
                          for line in path.read_text().splitlines()]
    assert strip(run / "metrics.jsonl") == strip(ref / "metrics.jsonl")
    scores = lambda path: [row["metrics"] for row in json.loads((path / "comparison.json").read_text())["rows"]]  # noqa: E731
    assert scores(run) == scores(ref)
    assert (run / "confusion.json").read_text() == (ref / "confusion.json").read_text()
    for name in ("latest/weights.safetensors", "latest/train.safetensors", "best.safetensors"):
        a, b = load_file(str(checkpoint_file(ref, name))), load_file(str(checkpoint_file(run, name)))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert ckpt.latest_state(run / "checkpoints")["step"] == 30
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers


def test_sigkill_at_every_step_of_the_checkpoint_protocol_resumes_bit_for_bit(reference, tmp_path):
    outs = {point: tmp_path / point.replace(":", "-") for point in FAULT_POINTS}
    pending = list(FAULT_POINTS)
    while pending:  # two killed fits at a time (the machine has two cores)
        batch, pending = pending[:2], pending[2:]
        procs = {point: start_fit(outs[point], DEEPSTRATA_FAULT=point) for point in batch}
        for point, proc in procs.items():
            proc.wait(timeout=180)
            assert proc.returncode == -signal.SIGKILL, f"{point}: not killed ({proc.returncode}) {proc.stderr.read()}"
    for point in FAULT_POINTS:
        out = outs[point]
        assert not (out / "comparison.json").exists(), point
        assert resume(out) == 0, point
        assert_same_run(reference, out)


def test_sigkill_at_random_instants_resumes_bit_for_bit(reference, tmp_path):
    draw = random.Random(12)
    killed = 0
    for attempt in range(2):
        out = tmp_path / f"random{attempt}"
        proc = start_fit(out)
        wait_for_checkpoint(out, proc)
        time.sleep(draw.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        killed += proc.returncode == -signal.SIGKILL
        assert resume(out) == 0
        assert_same_run(reference, out)
    assert killed >= 1, "every run finished before its kill"


@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_checkpoint_say_how_to_resume_and_resume_exactly(reference, tmp_path, signum, status):
    out = tmp_path / "run"
    proc = start_fit(out)
    wait_for_checkpoint(out, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"stopped by {signal.Signals(signum).name}" in lines[0]
    assert f"Continue with: deepstrata fit --out {out} --resume" in lines[0]
    stopped_at = ckpt.latest_state(out / "checkpoints")["step"]
    assert 0 < stopped_at < 30
    # The same command again, without --resume, is refused: the stopped run's work is never replaced unasked.
    assert main(["fit", *ARGS, "--out", str(out)]) == 2
    assert ckpt.latest_state(out / "checkpoints")["step"] == stopped_at
    assert resume(out) == 0
    assert_same_run(reference, out)
