"""Overwrite safety: which folders may be cleaned at all, and removing from them only what deepstrata wrote.

``--overwrite`` (and rerunning a fit that did not finish) deletes files, so this is where
the promise "fit never deletes what it did not write" is kept: the file-system root, the
home and current directories, anything holding them and anything holding the input data
are refused outright, and inside a run only the names of ``rundir_marker.OWNED_FILES`` /
``OWNED_DIRS`` are ever removed. A user's own files are moved, never deleted
(``carry_over``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable

from deepstrata.engine import checkpoint as ckpt
from deepstrata.errors import RunError
from deepstrata.rundir_marker import LOCK, MARKER, is_owned, run_state


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


def carry_over(source: Path, target: Path) -> list[str]:
    """Move what deepstrata did not write (a user's notes in a run) from ``source`` into ``target``."""
    moved = []
    for entry in sorted(Path(source).iterdir()):
        if not is_owned(entry.name) and not (Path(target) / entry.name).exists():
            os.rename(entry, Path(target) / entry.name)
            moved.append(entry.name)
    return moved
