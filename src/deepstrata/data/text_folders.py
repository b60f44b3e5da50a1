"""Labelled texts as files in class folders: a directory or a tar archive read in place.

The IMDB ``aclImdb`` layout (``train/pos/*.txt``, ``test/neg/*.txt``, an ``unsup/`` to
skip) and its kin are a folder per class, shipped as a ``.tar.gz``. Reading the archive
member by member, without unpacking, gives the same examples in the same order as the
unpacked directory, so the same split; an official ``test/`` is kept as the test set.
"""

from __future__ import annotations

import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepstrata.data.text_dataset import TextDataset, decode_bytes, natural_key
from deepstrata.errors import DataError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")
UNLABELLED_FOLDERS = ("unsup", "unlabeled", "unlabelled")


@dataclass(frozen=True)
class _Doc:
    split: str | None
    label: str
    name: str
    data: bytes | Path


def read_text_folder(path: str | Path, *, encoding: str = "utf-8", max_per_class: int | None = None) -> TextDataset:
    """A folder (or tar archive) of ``<class>/*.txt``, optionally under ``train/`` and ``test/``.

    Folders named ``unsup``/``unlabeled`` are skipped (IMDB's 50,000 unlabelled reviews).
    Files are ordered by split, class and natural file name, so a directory and its
    archive give the same examples in the same order, hence the same split.
    """
    path = Path(path)
    docs = _scan_archive(path, max_per_class) if path.is_file() else _scan_dir(path, max_per_class)
    notes: list[str] = []
    split_docs = [d for d in docs if d.split is not None]
    if split_docs:
        docs = split_docs
    docs = [d for d in docs if d.label.lower() not in UNLABELLED_FOLDERS]
    if not docs:
        raise DataError(f"{path}: no .txt files in class sub-folders (expected <class>/<name>.txt, "
                        f"or train/<class>/… and test/<class>/…)")
    docs.sort(key=lambda d: (d.split != "train", d.split or "", natural_key(d.label), natural_key(d.name)))
    train_docs = [d for d in docs if d.split in (None, "train")]
    test_docs = [d for d in docs if d.split == "test"]
    if split_docs and not train_docs:
        raise DataError(f"{path}: a test/ folder but no train/ folder of class sub-folders")
    classes = sorted({d.label for d in train_docs}, key=natural_key)
    unknown = sorted({d.label for d in test_docs} - set(classes))
    if unknown:
        raise DataError(f"{path}: test/ has class folder(s) {', '.join(unknown)} that train/ lacks")
    imdb = {c.lower() for c in classes} == {"pos", "neg"}

    def decode(doc: _Doc) -> str:
        data = doc.data.read_bytes() if isinstance(doc.data, Path) else doc.data
        where = doc.data if isinstance(doc.data, Path) else f"{path}:{doc.name}"
        text = decode_bytes(data, encoding, where)
        return text.replace("<br />", "\n") if imdb else text

    lookup = {name: i for i, name in enumerate(classes)}
    ds = TextDataset(
        texts=[decode(d) for d in train_docs],
        labels=np.array([lookup[d.label] for d in train_docs], dtype=np.int64),
        classes=classes,
        notes=notes,
    )
    if test_docs:
        ds.test_texts = [decode(d) for d in test_docs]
        ds.test_labels = np.array([lookup[d.label] for d in test_docs], dtype=np.int64)
        notes.append(f"official split kept: {len(train_docs)} train / {len(test_docs)} test files")
    if imdb:
        notes.append("IMDB layout: '<br />' line breaks of the scraped reviews turned into newlines")
    return ds


def _split_of(parts: list[str]) -> tuple[str | None, str] | None:
    """(split, class) for a path's folder parts, or None when the file is not in a class folder."""
    if len(parts) >= 2 and parts[-2].lower() in ("train", "test"):
        return parts[-2].lower(), parts[-1]
    if parts:
        return None, parts[-1]
    return None


def _scan_dir(root: Path, max_per_class: int | None) -> list[_Doc]:
    docs: list[_Doc] = []
    counts: dict[tuple, int] = {}
    for file in sorted(root.rglob("*.txt"), key=lambda p: tuple(natural_key(part) for part in p.parts)):
        parts = list(file.relative_to(root).parts[:-1])
        where = _split_of(parts)
        if where is None or not file.is_file():
            continue
        if max_per_class is not None:
            if counts.get(where, 0) >= max_per_class:
                continue
            counts[where] = counts.get(where, 0) + 1
        docs.append(_Doc(where[0], where[1], file.name, file))
    return docs


def _scan_archive(path: Path, max_per_class: int | None) -> list[_Doc]:
    if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise DataError(f"{path}: expected a folder or a .tar[.gz|.xz] archive of class sub-folders")
    docs: list[_Doc] = []
    counts: dict[tuple, int] = {}
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if not member.isfile() or not member.name.lower().endswith(".txt"):
                    continue
                parts = member.name.strip("/").split("/")
                where = _split_of(parts[:-1])
                if where is None or where[1].lower() in UNLABELLED_FOLDERS:
                    continue
                if max_per_class is not None:
                    if counts.get(where, 0) >= max_per_class:
                        continue
                    counts[where] = counts.get(where, 0) + 1
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                docs.append(_Doc(where[0], where[1], member.name, handle.read()))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DataError(f"{path}: not a readable tar archive ({err})") from None
    return docs
