"""Paths of files inside a run directory's checkpoints, for tests that compare runs."""

from __future__ import annotations

from pathlib import Path


def checkpoint_file(run_dir: Path, name: str) -> Path:
    """A file of a run's checkpoints: ``latest/NAME`` is inside the checkpoint ``checkpoints/latest`` names."""
    from deepstrata.engine.checkpoint import pointed

    checkpoints = Path(run_dir) / "checkpoints"
    if name.startswith("latest/"):
        target = pointed(checkpoints)
        assert target is not None, f"{checkpoints}: no checkpoint"
        return target / name.split("/", 1)[1]
    return checkpoints / name
