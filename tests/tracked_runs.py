"""Tiny digits runs in every state ``deepstrata runs`` reports, built once per test session.

A finished run (with baselines and ``--tensorboard``), a run killed mid-epoch by
``DEEPSTRATA_FAULT`` in a subprocess (left ``running`` with a dead lock holder and a
checkpoint at step 4: resumable), a run that failed (``--tensorboard`` with the extra
hidden: the loop refuses, the fit is marked failed before any checkpoint), and a foreign
folder. Tests copy a run before changing it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from deepstrata.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")
# digits: 1,295 training images, batch 128 -> 10 steps in the one epoch; a checkpoint every 4 steps.
ARGS = ["--data", "digits", "--epochs", "1", "--width", "8", "--batch-size", "128", "--checkpoint-every", "4",
        "--device", "cpu", "--quiet", "--seed", "1", "--threads", "1", "--tensorboard"]
STEPS = 10
KILLED_AT = "step:6"   # SIGKILL after step 6: the last checkpoint is step 4
_BUILT: dict[str, Path] = {}


def _root(tmp_path_factory) -> Path:
    if "root" not in _BUILT:
        _BUILT["root"] = tmp_path_factory.mktemp("tracked-runs")
    return _BUILT["root"]


def runs_folder(tmp_path_factory) -> Path:
    """``runs/`` holding ``finished``, ``killed``, ``failed`` and ``notes`` (foreign), made once."""
    if "runs" in _BUILT:
        return _BUILT["runs"]
    runs = _root(tmp_path_factory) / "runs"
    runs.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=SRC, DEEPSTRATA_FAULT=KILLED_AT)
    killer = subprocess.Popen([sys.executable, "-m", "deepstrata", "fit", *ARGS, "--no-baselines",
                               "--out", str(runs / "killed")], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert main(["fit", *ARGS, "--out", str(runs / "finished")]) == 0
    finally:
        killer.wait(timeout=180)
    assert killer.returncode == -9, killer.stderr.read()
    (runs / "notes").mkdir()
    (runs / "notes" / "todo.txt").write_text("try a wider cnn\n")
    _BUILT["runs"] = runs
    return runs


def failed_run(runs: Path) -> Path:
    """A fit that raised before its first checkpoint, as the fit's own guard leaves it (marker ``failed``)."""
    from deepstrata.rundir import abandon_run, prepare_run_dir

    out = prepare_run_dir(runs / "failed", resume=False, overwrite=False, quiet=True)
    abandon_run(out, RuntimeError("the data source vanished while reading"))
    return out
