"""Tar archives as image sources, and cheap looks into a source before reading it.

A downloaded data set often arrives as one ``.tar[.gz|.xz]`` (or a cache folder holding
only that archive). Format detection, the folder reader, the CIFAR reader and the shard
writer all need to recognise such an archive and peek at its first names without
unpacking it; this module is that shared piece. ``holds_text_files`` lives here for the
same reason: it is the cheap look that lets an image error hint at ``--task text``.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from pathlib import Path

from deepstrata.data.image_files import IMAGE_EXTENSIONS, describe_error
from deepstrata.errors import DataError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")
TEXT_HINT = "it holds .txt files in class folders: for text classification add --task text"


def is_archive(path: Path) -> bool:
    """Whether ``path`` is a file named like a tar archive (``ARCHIVE_SUFFIXES``)."""
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def single_archive(path: Path) -> Path:
    """The archive inside ``path`` if that is all the folder holds (a download cache), else ``path``."""
    if not path.is_dir():
        return path
    entries = [e for e in path.iterdir() if not e.name.startswith(".")]
    archives = [e for e in entries if is_archive(e)]
    if len(archives) != 1 or any(e.is_dir() or e.name.lower().endswith(IMAGE_EXTENSIONS) for e in entries):
        return path
    return archives[0]


def archive_file_names(path: Path, limit: int) -> list[str]:
    """Base names of the first ``limit`` files in an archive, read without unpacking it all."""
    names = []
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if member.isfile():
                    names.append(member.name.rsplit("/", 1)[-1])
                    if len(names) >= limit:
                        break
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable tar archive ({describe_error(exc)})") from None
    return names


def holds_text_files(path: str | Path, limit: int = 10_000) -> bool:
    """Whether ``path`` (a folder or tar archive) looks like text data: ``.txt`` files inside sub-folders.

    Looks at no more than ``limit`` files (or an archive's first 64), so a big folder costs little.
    """
    path = Path(path)
    if path.is_dir():
        seen = 0
        for folder, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            if folder != str(path) and any(f.lower().endswith(".txt") for f in files):
                return True
            seen += len(files)
            if seen >= limit:
                break
        return False
    if is_archive(path):
        try:
            return any(name.lower().endswith(".txt") for name in archive_file_names(path, limit=64))
        except DataError:
            return False
    return False
