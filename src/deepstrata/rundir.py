"""A run directory as something deepstrata owns: recognised, locked, and only ever cleaned of its own files.

``fit`` never deletes or breaks what it did not write. Four mechanisms keep that promise:

* **A marker.** ``RUN/.deepstrata-run.json`` — ``{"format": 1, "deepstrata": version,
  "status": "running" | "failed" | "finished", ...}`` — is written (atomically) as soon as
  a fit creates or takes over a directory, so a run is recognisable beyond doubt. Status
  ``finished`` is written at the very end of a successful fit; a fresh fit that raises
  leaves ``failed``; one that is killed leaves ``running`` with no live lock.
* **A lock.** ``RUN/.lock`` holds the pid and host of the fit using the directory, under
  ``fcntl.flock``: a second fit is refused in one line while the first lives, and the
  kernel releases the lock when a process dies, so a lock left by a killed fit is
  detected as stale and taken over with a note. Under torchrun rank 0 alone takes it.
* **Ownership.** ``--overwrite`` (and the rerun of a fit that did not finish) removes only
  the names in ``OWNED_FILES`` / ``OWNED_DIRS`` — what fit, inspect and the report write —
  and never anything else in the folder. It refuses outright the file-system root, the
  home directory, the current directory, any directory holding one of those, and any
  directory holding the input data.
* **Recognition.** A directory is a run when it has the marker. One written before the
  marker existed (a *legacy* run) is accepted when it holds ``model.json``,
  ``config.yaml`` and ``checkpoints/`` and nothing whose name deepstrata does not write;
  ``--resume`` also accepts a legacy run with other files beside it (resuming deletes
  nothing). Anything else is not a run, and is refused.

Status on ``--resume``: a resume never changes the status it finds until it finishes (so
a failed resume of a finished run leaves it finished and usable), and the records
(``config.yaml``, ``model.json``, ``provenance.json``) are rewritten only once the
resumed training has run (see ``check_resumable``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from deepstrata import __version__
from deepstrata.engine import checkpoint as ckpt
from deepstrata.engine import distributed
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
})
"""Files a run directory's top level may hold that deepstrata wrote; nothing else is ever removed."""
OWNED_DIRS = frozenset({"checkpoints", "inspect"})
"""Directories deepstrata writes inside a run: the loop's checkpoints, ``deepstrata inspect``'s report."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


def is_own_temp(name: str) -> bool:
    """A temporary file of an atomic write of one of ours (``.config.yaml.k3j2.tmp``), left by a kill."""
    return name.startswith(".") and name.endswith(".tmp") and any(name.startswith(f".{own}.") for own in OWNED_FILES)


def is_owned(name: str) -> bool:
    return name in OWNED_FILES or name in OWNED_DIRS or is_own_temp(name)


# ---------------------------------------------------------------- marker

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
    marker = {**old, "format": FORMAT, "deepstrata": __version__, "status": status, "updated": _now(),
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


# ---------------------------------------------------------------- lock

@dataclass
class _Held:
    path: Path
    fd: int
    fresh: bool  # a new (or restarted) run: failing marks it failed; a resume leaves the status it found


_HELD: dict[Path, _Held] = {}


def _read_lock(lock: Path) -> dict:
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}


def _holder(info: dict) -> str:
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}" + (
        f", since {info['since']}" if info.get("since") else "")


def _acquire(path: Path, quiet: bool) -> int:
    """Take ``path/.lock`` for this process (flock, non-blocking); refuse while another fit holds it."""
    import fcntl

    key = path.resolve()
    if key in _HELD:  # an earlier fit of this process that ended without finishing: take the directory over
        release(path)
    lock = path / LOCK
    for _ in range(10):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunError(f"{path}: another fit is using this run directory ({_holder(_read_lock(lock))}); "
                           "wait for it to finish, or use another --out") from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder released (and removed) it between our open and flock: try again
            os.close(fd)
            continue
        before = _read_lock(lock)
        if before.get("pid") is not None and (before.get("pid"), before.get("host")) != (os.getpid(),
                                                                                           socket.gethostname()):
            _say(quiet, f"note: {path}: the fit that held this run directory ({_holder(before)}) is no longer "
                        "running; taking it over")
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
        os.fsync(fd)
        return fd
    raise RunError(f"{path}: could not take the run directory's lock ({lock}); another fit keeps replacing it")


def lock_run(path: Path, quiet: bool = False) -> None:
    """Hold an existing run's lock while a verb rewrites it (``update`` in place); its status is left alone."""
    path = Path(path)
    _HELD[path.resolve()] = _Held(path, _acquire(path, quiet), fresh=False)


def carry_over(source: Path, target: Path) -> list[str]:
    """Move what deepstrata did not write (a user's notes in a run) from ``source`` into ``target``."""
    moved = []
    for entry in sorted(Path(source).iterdir()):
        if not is_owned(entry.name) and not (Path(target) / entry.name).exists():
            os.rename(entry, Path(target) / entry.name)
            moved.append(entry.name)
    return moved


def release(path: Path) -> None:
    """Let go of ``path``'s lock if this process holds it (removing ``.lock``); the status is left as it is."""
    held = _HELD.pop(Path(path).resolve(), None)
    if held is None:
        return
    lock = held.path / LOCK
    try:
        if os.stat(lock).st_ino == os.fstat(held.fd).st_ino:
            lock.unlink()
    except OSError:
        pass
    os.close(held.fd)


def finish_run(path: Path) -> None:
    """The very last step of a successful fit: status ``finished``, lock released (rank 0 only)."""
    write_marker(path, "finished", finished=_now())
    release(path)


def abandon_run(path: Path, error: BaseException | None) -> None:
    """A fit that raised: a fresh run is marked ``failed`` (so a rerun may replace it); a resumed one keeps
    the status it had, since its records were not rewritten. The lock is released either way."""
    held = _HELD.get(Path(path).resolve())
    if held is not None and held.fresh and (Path(path) / MARKER).is_file():
        reason = "interrupted" if isinstance(error, KeyboardInterrupt) else (
            f"{type(error).__name__}: {error}" if error is not None else "stopped")
        try:
            write_marker(path, "failed", error=reason.splitlines()[0][:500] if reason else "")
        except OSError:
            pass
    release(path)


@contextlib.contextmanager
def run_guard():
    """Around a fit: a run directory taken inside and not finished is marked (``abandon_run``) and unlocked
    when the fit raises, and unlocked when it returns without finishing (a non-main rank holds none)."""
    before = set(_HELD)
    try:
        yield
    except BaseException as err:
        for key in [k for k in _HELD if k not in before]:
            abandon_run(_HELD[key].path, err)
        raise
    for key in [k for k in _HELD if k not in before]:
        release(_HELD[key].path)


def guarded(fn):
    """Decorator form of ``run_guard`` for the fit functions (image, text, recommendation, shards, update)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with run_guard():
            return fn(*args, **kwargs)
    return wrapper


# ---------------------------------------------------------------- removal

def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_removable(path: Path, data: Iterable = ()) -> None:
    """Refuse to clean ``path`` when it is (or holds) the root, the home or the current directory, or the data."""
    where = Path(path).resolve()
    flag = f"--out {path}"
    if where == Path(where.anchor):
        raise RunError(f"{flag}: is the file-system root; refusing to replace it (give a run directory of its own)")
    for name, place in (("your home directory", Path.home()), ("the current directory", Path.cwd())):
        place = place.resolve()
        if _is_within(place, where):
            what = name if place == where else f"a directory that holds {name} ({place})"
            raise RunError(f"{flag}: is {what}; refusing to replace it (give a run directory of its own)")
    for item in data:
        if item is None or not isinstance(item, (str, Path)) or not str(item):
            continue
        source = Path(item)
        if source.exists() and _is_within(source.resolve(), where):
            raise RunError(f"{flag}: holds the input data {item}; refusing to replace it "
                           "(give a run directory of its own)")


def remove_owned(path: Path) -> list[str]:
    """Delete what deepstrata wrote in ``path`` (not the lock the caller holds, nor the marker); return the names."""
    removed = []
    for entry in sorted(Path(path).iterdir()):
        if entry.name in (LOCK, MARKER) or not is_owned(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry.name)
    ckpt.fsync_dir(Path(path))
    return removed


def remove_run(path: Path) -> None:
    """Delete a whole directory that deepstrata made for itself (an update's staging copy); refuse anything else."""
    state = run_state(path)
    if state == "absent":
        return
    if state not in ("run", "legacy", "empty"):
        raise RunError(f"{path}: exists and is not a deepstrata run directory; refusing to remove it")
    shutil.rmtree(path)


# ---------------------------------------------------------------- prepare

def _not_a_run(path: Path, doing: str) -> RunError:
    return RunError(f"{path}: exists and is not a deepstrata run directory (no {MARKER}); refusing to {doing} "
                    "it — use another --out")


def prepare_run_dir(path: Path, *, resume: bool, overwrite: bool, data: Iterable = (),
                    quiet: bool = False) -> Path:
    """Make ``path`` ready for a fit and lock it for this process; rank 0 alone calls this.

    * new (absent or empty): created, locked, marked ``running``;
    * ``resume``: must be a run (marker or legacy); locked; nothing written — the caller
      checks the saved model (``check_resumable``) and finds the checkpoint (``resume_point``);
    * a run that did not finish (``failed``, or ``running`` with no live lock): replaced —
      its own files only — with a note, as ``overwrite`` does for a finished run;
    * anything else is refused, in one line, before anything is written.

    ``data`` are the fit's input paths (a run directory holding them is never cleaned).

    Workers that torchrun restarted after a failure (``--max-restarts``) resume: the run
    continues from its last checkpoint by itself, whatever the command line said.
    """
    path = Path(path)
    if distributed.current().restarted:
        resume, overwrite = True, False
    try:
        return _prepare(path, resume, overwrite, data, quiet)
    except OSError as err:  # a read-only or full disk, a path through a file …
        raise RunError(f"--out {path}: cannot write the run directory there "
                       f"({err.strerror or err}{': ' + str(err.filename) if err.filename else ''})") from None


def _prepare(path: Path, resume: bool, overwrite: bool, data: Iterable, quiet: bool) -> Path:
    for _ in range(3):  # the state is read again under the lock; another fit may have changed it meanwhile
        state = run_state(path)
        if state == "file":
            raise RunError(f"--out {path}: is a file, not a directory")
        if overwrite and not resume and state not in ("absent", "empty"):
            check_removable(path, data)
        if state in ("foreign", "legacy+") and not (resume and state == "legacy+"):
            raise _not_a_run(path, "resume into" if resume else "overwrite" if overwrite else "write into")
        if resume and state == "absent":
            raise RunError(f"{path}: not found; --resume continues a run directory from its checkpoint")
        status = None
        if state in ("run", "legacy") and not resume:
            marker = read_marker(path)
            status = marker["status"] if marker is not None else "finished"
            if status == "finished" and not overwrite:
                raise RunError(f"{path}: already exists and holds a finished run",
                               hint=("--resume to continue it", "--overwrite to replace it", "another --out"))
            saved = ckpt.latest_state(path / "checkpoints") if not overwrite else None
            if saved is not None:  # stopped (preempted, killed) with work on disk: never replaced unasked
                raise RunError(f"{path}: holds a run that stopped at step {saved.get('step')} with a checkpoint",
                               hint=("--resume to continue it", "--overwrite to replace it", "another --out"))
            check_removable(path, data)
        path.mkdir(parents=True, exist_ok=True)
        _HELD[path.resolve()] = _Held(path, _acquire(path, quiet), fresh=not resume or state == "empty")
        try:
            if run_state(path) not in (state, "empty" if state == "absent" else state):
                release(path)
                continue
            if state in ("absent", "empty"):
                write_marker(path, "running", new=True)
            elif not resume:
                marker = read_marker(path)
                if (marker["status"] if marker is not None else "finished") != status:
                    release(path)
                    continue
                write_marker(path, "running", new=True)  # first, so that a kill while cleaning leaves a rerunnable run
                removed = remove_owned(path)
                if not overwrite:
                    _say(quiet, f"note: {path}: the earlier fit here did not finish (status {status}); starting "
                                f"again (replaced its {len(removed)} files; --resume continues from a checkpoint "
                                "instead)")
        except BaseException:
            release(path)
            raise
        return path
    raise RunError(f"{path}: the run directory keeps changing under another fit; try again, or use another --out")


def resume_point(run_dir: Path, resume: bool, quiet: bool = False) -> bool:
    """Whether this fit continues from a checkpoint: ``resume`` and one exists; says so when there is none."""
    if not resume:
        return False
    if ckpt.has_checkpoint(Path(run_dir) / "checkpoints"):
        return True
    _say(quiet, f"note: {run_dir}: no checkpoint yet (the fit stopped before its first one); "
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
        _say(quiet, f"note: {path} could not be read; its baseline rows are not kept")
        return []
    if not rows:
        return []
    if saved.get("data") != data or saved.get("split") != json.loads(json.dumps(split)):
        _say(quiet, f"note: baselines not run (--no-baselines), and the {len(rows)} saved baseline rows were "
                    "scored on another split; they are dropped")
        return []
    _say(quiet, f"baselines: not run (--no-baselines); keeping the {len(rows)} baseline rows the run saved "
                f"({', '.join(str(r.get('name')) for r in rows)}), scored on the same split")
    return rows


def free_name(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3`` … if taken (two fits started in the same second)."""
    candidate, n = Path(path), 2
    while candidate.exists():
        candidate, n = Path(f"{path}-{n}"), n + 1
    return candidate
