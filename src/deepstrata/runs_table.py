"""The table of runs under a folder: what ``deepstrata runs`` and ``ds.runs`` answer.

A user who tried three models and two learning rates has six run directories; this reads
each one's own files (the marker, ``config.yaml``, ``comparison.json``) into one row, so
they can be compared without opening six reports. It only reads: nothing under the folder
is locked, written or removed, and a directory that cannot be read as a run — damaged
files, a folder of something else — becomes a row with status ``damaged`` or ``foreign``
and a one-line reason, never an error that stops the listing.

Which directories: the direct children of the folder; a child that is not a run itself but
holds runs (a group of runs, such as ``runs/sweep-lr/``) is looked into one level more, its
runs named ``group/run``. Nothing deeper.

Status, from the marker and what is on disk:

* ``finished`` — the fit ran to the end (a pre-marker "legacy" run counts as finished);
* ``running`` — marked running and its fit's process is alive (same host), or on another host;
* ``resumable`` — marked running or failed, nobody holds it, and a checkpoint is there
  (``deepstrata fit --out RUN --resume`` continues it);
* ``interrupted`` — stopped with no checkpoint written; ``failed`` — a fit that raised;
* ``damaged`` / ``foreign`` — as above.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import socket
from pathlib import Path
from typing import Any

from deepstrata import runfiles
from deepstrata.errors import ConfigError, DeepstrataError, RunError
from deepstrata.report_table import best_row, comparison_rows, finite_number, higher_is_better, primary_metric
from deepstrata.rundir_marker import LOCK, MARKER, read_marker, run_state

COLUMNS = ("name", "status", "family", "data", "model", "epochs", "lr", "batch_size", "seed", "metric", "test",
           "baseline", "baseline_test", "margin", "train_seconds", "date")
"""The columns of the text table and of every row, in order (rows also carry ``note``, ``report`` and ``path``)."""
ASCENDING = ("name", "status", "family", "data", "model", "metric", "baseline", "train_seconds", "date")
"""Columns sorted from the smallest up; every other column (the metrics) best first."""


def _row(name: str, path: Path) -> dict[str, Any]:
    return {**dict.fromkeys(COLUMNS), "name": name, "note": "", "report": None, "path": str(path)}


def _date(marker: dict | None, path: Path) -> str | None:
    for key in ("finished", "updated", "created"):
        if marker and isinstance(marker.get(key), str):
            return marker[key]
    try:
        stamp = path.stat().st_mtime
    except OSError:
        return None
    return _dt.datetime.fromtimestamp(stamp, _dt.timezone.utc).isoformat(timespec="seconds")


def _alive(path: Path) -> bool:
    """Whether the fit that holds ``path/.lock`` still runs: its pid lives here, or it is on another host."""
    try:
        info = json.loads((path / LOCK).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    if not isinstance(info, dict) or not isinstance(info.get("pid"), int):
        return False
    if info.get("host") != socket.gethostname():
        return True  # cannot be checked from here; the cautious answer
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _has_checkpoint(path: Path) -> bool:
    from deepstrata.engine.checkpoint import has_checkpoint

    return (path / "checkpoints").is_dir() and has_checkpoint(path / "checkpoints")


def _settings(row: dict[str, Any], path: Path) -> None:
    """Family, data, model and the key train settings, from ``config.yaml`` (read as plain YAML: no defaults)."""
    import yaml

    config_path = path / "config.yaml"
    if not config_path.is_file():
        raise RunError(f"{config_path}: not found")
    try:
        config = yaml.safe_load(runfiles.read_text(config_path))
    except yaml.YAMLError as err:
        raise runfiles.damaged(config_path, f"not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise runfiles.damaged(config_path, "expected a mapping at the top level")
    section = lambda key: config.get(key) if isinstance(config.get(key), dict) else {}  # noqa: E731
    train, data, model = section("train"), section("data"), section("model")
    row["family"] = config.get("task")
    row["data"] = data.get("source")
    row["model"] = model.get("name")
    for key in ("epochs", "lr", "batch_size", "seed"):
        row[key] = train.get(key)


def _scores(row: dict[str, Any], path: Path) -> None:
    """The learned row's primary test metric, the best baseline and the margin, from ``comparison.json``."""
    comparison_path = path / "comparison.json"
    comparison = runfiles.read_json(comparison_path)
    try:
        rows = comparison_rows(comparison)
    except RunError as err:
        raise runfiles.damaged(comparison_path, str(err).removeprefix("comparison: ")) from None
    metric = primary_metric(comparison)
    row["metric"] = metric
    row["family"] = comparison.get("task") or row["family"]
    row["data"] = row["data"] or comparison.get("data")
    learned = best_row((r for r in rows if r.get("kind") == "learned"), metric)
    baseline = best_row((r for r in rows if r.get("kind") == "baseline"), metric)
    if learned is not None:
        row["test"] = learned[1]
        row["train_seconds"] = finite_number(learned[0].get("train_seconds"))
    if baseline is not None:
        row["baseline"], row["baseline_test"] = baseline[0]["name"], baseline[1]
    if learned is not None and baseline is not None:
        row["margin"] = learned[1] - baseline[1]


def _status(marker: dict | None, path: Path) -> tuple[str, str]:
    status = marker["status"] if marker is not None else "finished"
    if status == "finished":
        return "finished", ""
    if status == "running" and (path / LOCK).is_file() and _alive(path):
        return "running", ""
    if _has_checkpoint(path):
        saved = _saved_step(path)
        why = f"failed ({marker.get('error')}); " if status == "failed" and marker.get("error") else ""
        return "resumable", f"{why}checkpoint at step {saved}; continue with: deepstrata fit --out {path} --resume"
    if status == "failed":
        return "failed", str(marker.get("error") or "the fit raised")
    return "interrupted", "stopped before its first checkpoint"


def _saved_step(path: Path) -> Any:
    from deepstrata.engine.checkpoint import latest_state

    state = latest_state(path / "checkpoints")
    return state.get("step") if isinstance(state, dict) else "?"


def read_run(path: Path, name: str | None = None) -> dict[str, Any]:
    """One row for the directory ``path``: never raises for what is in it (a bad run is a row saying so)."""
    path = Path(path)
    row = _row(name or path.name, path)
    try:
        state = run_state(path)
        if state not in ("run", "legacy"):
            row["status"] = "foreign" if state in ("foreign", "legacy+") else "empty" if state == "empty" else state
            row["note"] = {"foreign": f"not a deepstrata run (no {MARKER})", "empty": "an empty run directory",
                           "legacy+": "a pre-marker run with files deepstrata did not write"}.get(state, "")
            row["date"] = _date(None, path)
            return row
        marker = read_marker(path)
        row["date"] = _date(marker, path)
        if marker is not None and marker.get("damaged"):
            row["status"], row["note"] = "damaged", f"{path / MARKER}: damaged run file (not a JSON object)"
            return row
        row["status"], row["note"] = _status(marker, path)
        if row["status"] == "finished" or (path / "config.yaml").is_file():  # a fit may fail before writing it
            _settings(row, path)
        if row["status"] == "finished":
            _scores(row, path)
        if (path / "report.html").is_file():
            row["report"] = f"{row['name']}/report.html"
    except DeepstrataError as err:
        row["status"], row["note"] = "damaged", str(err).splitlines()[0]
    except OSError as err:
        row["status"], row["note"] = "damaged", f"{err.filename or path}: cannot read ({err.strerror or err})"
    return row


def _holds_runs(path: Path) -> list[Path]:
    try:
        return sorted(child for child in path.iterdir() if child.is_dir() and (child / MARKER).is_file())
    except OSError:
        return []


def list_runs(folder: str | Path = "runs") -> list[dict[str, Any]]:
    """A row per run directory under ``folder`` (see the module docstring), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"{folder}: not found" if not folder.exists() else f"{folder}: not a directory")
    rows = []
    for child in sorted(folder.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        inner = _holds_runs(child) if run_state(child) == "foreign" else []
        if inner:
            rows.extend(read_run(run, f"{child.name}/{run.name}") for run in inner)
        else:
            rows.append(read_run(child))
    return rows


def sort_rows(rows: list[dict[str, Any]], by: str) -> list[dict[str, Any]]:
    """``rows`` ordered by a column, or by a test metric's name (``accuracy``: the ``test`` column).

    Metrics come best first (lower first for a loss or error), names, dates and seconds
    from the smallest up; rows without a value go last.
    """
    known = set(COLUMNS) | {row["metric"] for row in rows if row.get("metric")}
    if by not in known:
        raise ConfigError(f"--sort {by}: not a column; choose from {', '.join(sorted(known))}")
    column = "test" if by not in COLUMNS else by
    descending = column not in ASCENDING and higher_is_better(by if by not in COLUMNS else "accuracy")

    def key(row: dict[str, Any]):
        value = row.get(column)
        if by not in COLUMNS and row.get("metric") != by:
            value = None
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return (1, 0, "")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (0, -value if descending else value, "")
        return (0, 0, str(value))

    return sorted(rows, key=key)


def runs(folder: str | Path = "runs", *, sort: str | None = None, as_frame: bool = False):
    """The runs under ``folder`` as a list of dicts (``COLUMNS`` plus ``note``, ``report``, ``path``).

    ``as_frame=True`` returns a pandas DataFrame instead (pandas is not a dependency; it
    must be installed).
    """
    rows = list_runs(folder)
    if sort:
        rows = sort_rows(rows, sort)
    if not as_frame:
        return rows
    try:
        import pandas
    except ImportError:
        raise ConfigError("as_frame=True needs pandas (pip install pandas); without it runs() returns a list "
                          "of dicts") from None
    return pandas.DataFrame(rows)


def cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if value is None:
        return "-"
    if column in ("test", "baseline_test"):
        return f"{value:.4f}"
    if column == "margin":
        return f"{value:+.4f}"
    if column == "train_seconds":
        return f"{value:.1f}"
    if column == "lr":
        return f"{value:g}"
    if column == "date":
        return str(value)[:16].replace("T", " ")
    return str(value)


def format_runs(rows: list[dict[str, Any]]) -> str:
    """An aligned text table, one line per run; damaged and foreign rows carry their reason at the end."""
    if not rows:
        return "no run directories"
    headers = {"batch_size": "batch", "baseline_test": "base_test", "train_seconds": "train_s"}
    table = [[headers.get(c, c) for c in COLUMNS]] + [[cell(row, c) for c in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    numeric = {"epochs", "lr", "batch_size", "seed", "test", "baseline_test", "margin", "train_seconds"}
    lines = []
    for index, line in enumerate(table):
        cells = [cell.rjust(w) if COLUMNS[i] in numeric else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(line, widths))]
        text = "  ".join(cells).rstrip()
        if index and rows[index - 1]["status"] in ("damaged", "foreign", "failed", "interrupted", "empty"):
            text += f"  ({rows[index - 1]['note']})" if rows[index - 1]["note"] else ""
        lines.append(text)
    return "\n".join(lines)
