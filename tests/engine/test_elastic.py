"""Many processes, many "machines": kills on one rank, preemption, two nodes, elastic restarts (gloo, CPU).

The two-node case starts two torchrun agents on this host (``--nnodes 2
--nproc-per-node 1``) that meet through a c10d rendezvous on 127.0.0.1, as two machines
would through the first one's address. Every result is compared with the same two
processes on one machine (``--devices 2``), exactly: with BatchNorm each process
normalises by its own half-batch's statistics, so a data-parallel CNN matches one
process only up to that (tests/engine/test_distributed.py shows the one-process match on
a model without it).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deepstrata.engine import checkpoint as ckpt
from deepstrata.engine import distributed
from tests.run_files import checkpoint_file

SRC = str(Path(__file__).resolve().parents[2] / "src")
# digits, batch 64 -> 20 steps an epoch, 40 in all; a checkpoint every 4 steps and at each epoch's end.
ARGS = ["--data", "digits", "--epochs", "2", "--width", "8", "--batch-size", "64", "--checkpoint-every", "4",
        "--device", "cpu", "--no-baselines", "--quiet", "--seed", "1"]


def env(**extra) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in distributed.RANK_VARIABLES and not k.startswith(("TORCHELASTIC", "DEEPSTRATA_FAULT"))}
    return {**clean, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", **extra}


def fit(*args: str, timeout: float = 300, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepstrata", "fit", *args], capture_output=True, text=True,
                          timeout=timeout, env=env(**extra))


def weights(run: Path, name: str = "latest/weights.safetensors") -> dict:
    return load_file(str(checkpoint_file(run, name)))


def assert_equal(a: dict, b: dict, tolerance: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=tolerance, rtol=0), key


@pytest.fixture(scope="module")
def two_process_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("elastic") / "ref2"
    done = fit(*ARGS, "--devices", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _worker_pids(parent: int) -> dict[int, int]:
    """{rank: pid} of the worker processes under ``parent`` (read from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != parent:
            continue
        for item in environ:
            if item.startswith(b"RANK="):
                found[int(item[5:])] = int(entry.name)
    return found


def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(two_process_reference, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "deepstrata", "fit", *ARGS, "--devices", "2", "--out", str(out)],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and ckpt.pointed(out / "checkpoints") is None:
        time.sleep(0.01)
    pids = _worker_pids(proc.pid)
    assert set(pids) == {0, 1}, pids
    os.kill(pids[1], signal.SIGTERM)  # as a scheduler preempting one machine
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert f"Continue with: deepstrata fit --out {out} --resume" in err
    state = ckpt.latest_state(out / "checkpoints")
    assert 0 < state["step"] < 40
    resumed = fit("--resume", "--out", str(out), "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_equal(weights(two_process_reference), weights(out))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def two_nodes(out: Path, *extra_torchrun: str, node_env: tuple[dict, dict] = ({}, {})) -> list[subprocess.Popen]:
    port = _free_port()
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
              "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"test{port}",
              *extra_torchrun, "-m", "deepstrata", "fit", *ARGS, "--out", str(out)]
    return [subprocess.Popen(launch, env=env(**node_env[i]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True) for i in range(2)]


def finish(procs: list[subprocess.Popen]) -> list[str]:
    errs = []
    for proc in procs:
        _, err = proc.communicate(timeout=400)
        errs.append(err)
        assert proc.returncode == 0, err[-3000:]
    return errs


def test_two_nodes_restarted_after_a_kill_in_a_checkpoint_write_resume_by_themselves(two_process_reference,
                                                                                     tmp_path):
    """Rank 0 killed inside its third checkpoint write (step 12: after the pointer's switch, before best is
    published), on whichever node it landed: both agents (``--max-restarts 1``) restart the group, which
    resumes from that checkpoint without being told and ends with the uninterrupted run's weights. Across
    machines the restart needs a fresh store per attempt (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``,
    docs/scaling.md). (tests/engine/test_crash_safety.py tries every point of the protocol in one process;
    only rank 0 writes, so this is the point where a group's restart meets a half-published checkpoint.)"""
    out = tmp_path / "run"
    node = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", "DEEPSTRATA_FAULT": "checkpoint:pointer:3",
            "DEEPSTRATA_FAULT_RANK": "0"}
    errs = finish(two_nodes(out, "--max-restarts", "1", "--monitor-interval", "0.2", node_env=(node, node)))
    assert any("resuming from checkpoints/step-000000012" in err for err in errs)
    for name in ("latest/weights.safetensors", "best.safetensors"):
        assert_equal(weights(two_process_reference, name), weights(out, name))
