"""Resuming a run: whether there is a checkpoint to continue from, whether the model still matches, which rows to keep.

A resume must never silently change what the run is. Before anything is written it is
refused when the fit would build a different task, model or class list than the run saved
(``check_resumable``); a resume without a checkpoint says it starts over
(``resume_point``); and baseline rows are carried into the new ``comparison.json`` only
when they were scored on the same data and split (``kept_baseline_rows``).
"""

from __future__ import annotations

import json
from pathlib import Path

from deepstrata.engine import checkpoint as ckpt
from deepstrata.errors import RunError
from deepstrata.rundir_marker import say


def resume_point(run_dir: Path, resume: bool, quiet: bool = False) -> bool:
    """Whether this fit continues from a checkpoint: ``resume`` and one exists; says so when there is none."""
    if not resume:
        return False
    if ckpt.has_checkpoint(Path(run_dir) / "checkpoints"):
        return True
    say(quiet, f"note: {run_dir}: no checkpoint yet (the fit stopped before its first one); "
               "--resume starts from the beginning")
    return False


def _describe(info: dict) -> str:
    spec = info.get("spec") or {}
    parts = [str(spec.get("family", info.get("task", "?")))]
    parts += [f"{k}={v}" for k, v in spec.items() if k != "family"]
    return " ".join(parts)


def check_resumable(run_dir: Path, info: dict) -> None:
    """Refuse a resume whose model would differ from the one the run saved (before anything is written).

    Compares the task, the model spec (family, sizes, input shape, classes) and the class
    names with ``model.json``; a run without one (stopped before writing it) passes.
    """
    path = Path(run_dir) / "model.json"
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunError(f"{path}: the run is damaged (model.json is not valid JSON: {err}); cannot resume") from None
    new = json.loads(json.dumps(info, default=str))
    for key in ("task", "spec", "classes"):
        if key in new and key in saved and saved[key] != new[key]:
            what = {"task": "a task", "spec": "a model", "classes": "classes"}[key]
            shown = {"task": lambda i: i.get("task"), "spec": _describe,
                     "classes": lambda i: ", ".join(map(str, i.get("classes", [])[:8]))}[key]
            raise RunError(f"--resume {run_dir}: the run has {what} ({shown(saved)}) that this fit would change "
                           f"({shown(new)}); resume with the run's own settings, or start a new run "
                           "(another --out, or --overwrite)")


def kept_baseline_rows(run_dir: Path, data: str, split: dict, quiet: bool = False) -> list[dict]:
    """Baseline rows of the run's saved ``comparison.json``, for a resume that skips the baselines.

    They are kept only when they were scored on the same data and split (the same
    ``data`` and ``split`` record); otherwise, or when the file cannot be read, none are.
    """
    path = Path(run_dir) / "comparison.json"
    if not path.is_file():
        return []
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        rows = [row for row in saved.get("rows", []) if isinstance(row, dict) and row.get("kind") == "baseline"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError):
        say(quiet, f"note: {path} could not be read; its baseline rows are not kept")
        return []
    if not rows:
        return []
    if saved.get("data") != data or saved.get("split") != json.loads(json.dumps(split)):
        say(quiet, f"note: baselines not run (--no-baselines), and the {len(rows)} saved baseline rows were "
                   "scored on another split; they are dropped")
        return []
    say(quiet, f"baselines: not run (--no-baselines); keeping the {len(rows)} baseline rows the run saved "
               f"({', '.join(str(r.get('name')) for r in rows)}), scored on the same split")
    return rows
