"""One fit per run directory: the ``RUN/.lock`` this process holds, and how a fit lets go of it.

A second fit on the same directory must be refused while the first lives, and a lock left
by a killed fit must not block forever. ``fcntl.flock`` gives both (the kernel drops it when
the process dies, so a leftover ``.lock`` file is recognisably stale and taken over with a
note). The locks this process holds are kept in one table here, which is also what lets
``run_guard`` mark and unlock, when a fit raises, exactly the directories that fit took.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from deepstrata.errors import RunError
from deepstrata.rundir_marker import LOCK, MARKER, say, timestamp, write_marker


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
            say(quiet, f"note: {path}: the fit that held this run directory ({_holder(before)}) is no longer "
                       "running; taking it over")
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": timestamp()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
        os.fsync(fd)
        return fd
    raise RunError(f"{path}: could not take the run directory's lock ({lock}); another fit keeps replacing it")


def hold(path: Path, quiet: bool, *, fresh: bool) -> None:
    """Take ``path``'s lock for this process; ``fresh``: a new run, which ``abandon_run`` marks failed."""
    path = Path(path)
    _HELD[path.resolve()] = _Held(path, _acquire(path, quiet), fresh=fresh)


def lock_run(path: Path, quiet: bool = False) -> None:
    """Hold an existing run's lock while a verb rewrites it (``update`` in place); its status is left alone."""
    hold(path, quiet, fresh=False)


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
    write_marker(path, "finished", finished=timestamp())
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
