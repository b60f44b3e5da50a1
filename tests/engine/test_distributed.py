"""Data-parallel training on CPU with 2 gloo processes, against a single process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deepstrata.engine import distributed
from deepstrata.errors import ConfigError

SRC = str(Path(__file__).resolve().parents[2] / "src")
WORKER = str(Path(__file__).with_name("dist_worker.py"))
TOLERANCE = 1e-5  # gradients are averaged across processes: float sums in another order


def env() -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in distributed.RANK_VARIABLES}
    return {**clean, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}


def torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *args],
                          capture_output=True, text=True, timeout=timeout, env=env())


def test_two_gloo_processes_match_one_process(tmp_path):
    single = subprocess.run([sys.executable, WORKER, str(tmp_path / "single")], capture_output=True, text=True,
                            timeout=240, env=env())
    assert single.returncode == 0, single.stderr
    double = torchrun(WORKER, str(tmp_path / "double"))
    assert double.returncode == 0, double.stderr[-3000:]

    reference = load_file(str(tmp_path / "single" / "rank0.safetensors"))
    rank0 = load_file(str(tmp_path / "double" / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "double" / "rank1.safetensors"))
    for key, value in reference.items():
        assert torch.equal(rank0[key], rank1[key]), f"ranks differ in {key}"
        assert torch.allclose(rank0[key], value, atol=TOLERANCE, rtol=0), f"{key} differs from one process"
    # Validation metrics summed across ranks: 7 examples split 4 + 3, none counted twice.
    one = json.loads((tmp_path / "single" / "rank0.json").read_text())
    two = json.loads((tmp_path / "double" / "rank1.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["val_accuracy"] == pytest.approx(one["val_accuracy"], abs=1e-9)
    assert two["val_loss"] == pytest.approx(one["val_loss"], abs=1e-4)
    # One example, two processes: counted once, not zero or two times.
    assert two["lone_val_accuracy"] == one["lone_val_accuracy"] in (0.0, 1.0)
    assert two["lone_val_loss"] == pytest.approx(one["lone_val_loss"], abs=1e-4)
    # Only rank 0 wrote the run's files, once.
    rows = (tmp_path / "double" / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2


def test_batch_not_divisible_by_processes_is_refused_before_launch(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "deepstrata", "fit", "--data", "digits", "--devices", "2",
                           "--batch-size", "63", "--out", str(tmp_path / "r")], capture_output=True, text=True,
                          timeout=120, env=env())
    assert proc.returncode == 2 and "not divisible" in proc.stderr and "Traceback" not in proc.stderr


def test_local_share_and_environment_checks(monkeypatch):
    assert distributed.local_share(64) == slice(0, 64)
    for name in distributed.RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="LOCAL_RANK"):
        distributed.read_environment()
    for name, value in (("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500"), ("RANK", "5")):
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="RANK=5 is outside"):
        distributed.read_environment()


def test_devices_without_a_launcher_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="devices=2: several processes are started by the CLI"):
        distributed.join("cpu", 2)
    assert distributed.join("cpu", 1).world_size == 1


def test_per_device_batch_and_linear_lr_scaling_on_two_processes(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "deepstrata", "fit", "--data", "digits", "--epochs", "1",
                           "--width", "8", "--batch-size", "33", "--batch-per-device", "--lr-scaling", "linear",
                           "--lr", "0.001", "--schedule", "constant", "--device", "cpu", "--no-baselines",
                           "--devices", "2", "--out", str(out)], capture_output=True, text=True, timeout=300, env=env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "global batch 66 (33 each), lr 0.002" in proc.stderr
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    train_examples = json.loads((out / "comparison.json").read_text())["split"]["train"]
    assert row["lr"] == pytest.approx(0.002) and row["step"] == train_examples // 66
    saved = (out / "config.yaml").read_text()
    assert "batch_size: 33" in saved and "batch_per_device: true" in saved  # what the user asked, resumable as such


def test_a_restarted_group_on_one_machine_reads_only_its_own_attempts_keys(monkeypatch):
    """torchrun's shared store outlives a failed attempt: the restarted group must not read what the dead
    ranks published (pytorch/pytorch#135712), so each attempt gets its own key prefix."""
    import datetime

    import torch.distributed as dist

    from deepstrata.engine.distributed import DistEnv, _restart_store

    server = dist.TCPStore("127.0.0.1", 0, 2, is_master=True, wait_for_workers=False)
    server.set("default_pg/0//rank_0", "address of a dead process")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(server.port))
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "1")
    timeout = datetime.timedelta(seconds=5)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert _restart_store(DistEnv(0, 2), timeout) is None  # the first attempt: torch's own store is clean
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    store = _restart_store(DistEnv(0, 2), timeout)
    assert not store.check(["default_pg/0//rank_0"])
    store.set("default_pg/0//rank_0", "address of the live process")
    assert server.get("deepstrata/job/attempt-2/default_pg/0//rank_0") == b"address of the live process"
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")  # several machines disagree on the count: torch's opt-out instead
    assert _restart_store(DistEnv(0, 2), timeout) is None
