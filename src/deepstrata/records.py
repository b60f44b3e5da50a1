"""The records a fit writes beside its checkpoints: model.json, provenance.json, and the run's default name.

Every family writes them the same way (``deepstrata.pipeline``); ``deepstrata.run`` reads them.
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from deepstrata import __version__
from deepstrata.engine import checkpoint as ckpt
from deepstrata.rundir import free_name

MODEL_FILE = "model.json"


def default_run_dir(source: str, model: str, root: Path = Path("runs")) -> Path:
    """``runs/<data>-<model>-<date>-<time>``, with ``-2``, ``-3`` … when two fits start in the same second."""
    stem = Path(source).name.split(".")[0] or "data"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return free_name(root / f"{stem}-{model}-{stamp}")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _package_version(module: str, distribution: str) -> str | None:
    """``module.__version__`` without importing it when it is not loaded yet.

    Importing scikit-learn (it pulls in SciPy) costs 1-2 s; a run that never touched it
    (``--no-baselines``) reads the same version string from the installed metadata.
    """
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__version__", None):
        return loaded.__version__
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        pass
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def provenance(device: torch.device, seed: int, precision: tuple[str, str] | None = None) -> dict:
    """What is needed to reproduce a run months later; ``precision``: the one trained in and why (``auto``)."""
    chosen = {"precision": precision[0], "precision_reason": precision[1]} if precision is not None else {}
    return {
        "deepstrata": __version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": _package_version("sklearn", "scikit-learn"),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "seed": seed,
        **chosen,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_model_info(run_dir: Path, info: dict) -> None:
    ckpt.atomic_write_json(run_dir / MODEL_FILE, info)


def write_run_records(run_dir: Path, info: dict, device: torch.device, seed: int, world_size: int = 1,
                      precision: tuple[str, str] | None = None) -> None:
    """``model.json`` (what the model is) and ``provenance.json`` (how to reproduce it); rank 0 writes them."""
    write_model_info(run_dir, info)
    ckpt.atomic_write_json(run_dir / "provenance.json",
                           {**provenance(device, seed, precision), "world_size": world_size})

