"""What a run directory is: the marker, the names deepstrata owns in it, and the state it is found in.

Every other part of ``deepstrata.rundir`` decides from these alone — whether a folder is
a run, whether it finished, and which of its entries deepstrata may ever remove — so they
live in one place, with no locking or deleting of their own. The marker
``RUN/.deepstrata-run.json`` is always written atomically (``engine.checkpoint``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import sys
from pathlib import Path

from deepstrata import __version__
from deepstrata.engine import checkpoint as ckpt
from deepstrata.errors import RunError

MARKER = ".deepstrata-run.json"
LOCK = ".lock"
FORMAT = 1
STATUSES = ("running", "failed", "finished")
LEGACY_CORE = ("model.json", "config.yaml", "checkpoints")
OWNED_FILES = frozenset({
    MARKER, LOCK,
    "config.yaml", "model.json", "provenance.json", "metrics.jsonl", "comparison.json", "confusion.json",
    "report.html", "report_sections.json",   # report.write_report
    "tokenizer.json",                         # text runs (families.text.fit.TOKENIZER_FILE)
    "interactions.npz", "vocab.json",         # recommendation runs (families.recommend.config.LOG_FILE, VOCAB_FILE)
    "curve.json",                             # deepstrata transfer --curve (curve.CURVE_FILE)
})
"""Files a run directory's top level may hold that deepstrata wrote; nothing else is ever removed."""
OWNED_DIRS = frozenset({"checkpoints", "inspect", "data-shards", "curve-runs", "export", "tensorboard"})
"""Directories deepstrata writes inside a run: the loop's checkpoints, ``deepstrata inspect``'s report, the
shards of an image folder too large for memory (``families.image.spill.SHARD_DIR``), the fits of a
learning curve (``curve.RUNS_DIR``), the TensorBoard event files of ``--tensorboard`` (``engine.tracking.DIR``)
and ``deepstrata export``'s default files (``export.files``), which
describe the old weights once a run is refitted, so an overwrite takes them with it."""


def timestamp() -> str:
    """Now, in UTC, to the second (ISO 8601): the time stamps of the marker and the lock."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def say(quiet: bool, message: str) -> None:
    """A note on stderr, unless ``quiet``."""
    if not quiet:
        print(message, file=sys.stderr)


def is_own_temp(name: str) -> bool:
    """A temporary file of an atomic write of one of ours (``.config.yaml.k3j2.tmp``), left by a kill."""
    return name.startswith(".") and name.endswith(".tmp") and any(name.startswith(f".{own}.") for own in OWNED_FILES)


def is_owned(name: str) -> bool:
    return name in OWNED_FILES or name in OWNED_DIRS or is_own_temp(name)


def read_marker(path: Path) -> dict | None:
    """The marker of run directory ``path``; ``None`` without one. A damaged marker reads as a finished run
    (the cautious answer: it is a run, and replacing it needs ``--overwrite``)."""
    marker = Path(path) / MARKER
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {"format": FORMAT, "status": "finished", "damaged": True}
    if not isinstance(data, dict):
        return {"format": FORMAT, "status": "finished", "damaged": True}
    fmt = data.get("format")
    if isinstance(fmt, int) and fmt > FORMAT:
        raise RunError(f"{marker}: written by a newer deepstrata (run format {fmt}; this one reads {FORMAT}); "
                       "use that version, or another --out")
    if data.get("status") not in STATUSES:
        data["status"] = "finished"
    return data


def write_marker(path: Path, status: str, *, new: bool = False, **fields) -> None:
    """Set the marker's status, atomically; it keeps what it already says unless ``new`` (a run starting over)."""
    if status not in STATUSES:
        raise ValueError(f"status: {status!r}")
    old = {} if new else (read_marker(path) or {})
    if old.get("damaged"):
        old = {}
    marker = {**old, "format": FORMAT, "deepstrata": __version__, "status": status, "updated": timestamp(),
              "host": socket.gethostname(), "pid": os.getpid(), **fields}
    marker.setdefault("created", marker["updated"])
    if status != "failed":
        marker.pop("error", None)
    ckpt.atomic_write_json(Path(path) / MARKER, marker)


def run_state(path: Path) -> str:
    """``absent``, ``file``, ``empty`` (nothing but a lock or temp files of ours), ``run`` (the marker),
    ``legacy`` (a pre-marker run, only names of ours), ``legacy+`` (one with other files beside) or ``foreign``."""
    path = Path(path)
    if not path.exists():
        return "absent"
    if not path.is_dir():
        return "file"
    names = {entry.name for entry in path.iterdir()}
    if all(name == LOCK or is_own_temp(name) for name in names):
        return "empty"
    if MARKER in names:
        return "run"
    if all(name in names for name in LEGACY_CORE) and (path / "checkpoints").is_dir():
        return "legacy" if all(is_owned(name) for name in names) else "legacy+"
    return "foreign"
