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

This module is the public face and the one decision that needs all four: ``prepare_run_dir``.
The mechanisms live beside it, one job each — ``rundir_marker`` (the marker, owned names,
recognition), ``rundir_lock`` (the lock and what a fit that raises leaves),
``rundir_overwrite`` (what may be removed) and ``rundir_resume`` (continuing a run) — and
every public name of theirs is importable from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from deepstrata.engine import checkpoint as ckpt
from deepstrata.engine import distributed
from deepstrata.errors import RunError
from deepstrata.rundir_lock import (
    abandon_run,
    finish_run,
    guarded,
    hold,
    lock_run,
    release,
    run_guard,
)
from deepstrata.rundir_marker import (
    FORMAT,
    LEGACY_CORE,
    LOCK,
    MARKER,
    OWNED_DIRS,
    OWNED_FILES,
    STATUSES,
    is_own_temp,
    is_owned,
    read_marker,
    run_state,
    say,
    write_marker,
)
from deepstrata.rundir_overwrite import carry_over, check_removable, remove_owned, remove_run
from deepstrata.rundir_resume import check_resumable, kept_baseline_rows, resume_point

__all__ = [
    "FORMAT", "LEGACY_CORE", "LOCK", "MARKER", "OWNED_DIRS", "OWNED_FILES", "STATUSES",
    "abandon_run", "carry_over", "check_removable", "check_resumable", "finish_run", "free_name", "guarded",
    "is_own_temp", "is_owned", "kept_baseline_rows", "lock_run", "prepare_run_dir", "read_marker", "release",
    "remove_owned", "remove_run", "resume_point", "run_guard", "run_state", "write_marker",
]


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
        hold(path, quiet, fresh=not resume or state == "empty")
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
                    say(quiet, f"note: {path}: the earlier fit here did not finish (status {status}); starting "
                               f"again (replaced its {len(removed)} files; --resume continues from a checkpoint "
                               "instead)")
        except BaseException:
            release(path)
            raise
        return path
    raise RunError(f"{path}: the run directory keeps changing under another fit; try again, or use another --out")


def free_name(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3`` … if taken (two fits started in the same second)."""
    candidate, n = Path(path), 2
    while candidate.exists():
        candidate, n = Path(f"{path}-{n}"), n + 1
    return candidate
