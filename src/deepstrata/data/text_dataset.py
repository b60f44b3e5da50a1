"""What every text reader builds and checks: the ``TextDataset``, decoding, class order.

Tables, fastText files and class folders (``text_tables``/``text_columns``,
``text_fasttext``, ``text_folders``) each end in a ``TextDataset``. They share how bytes
are decoded (a bad byte names its line and suggests ``--encoding``), how class names are
ordered (naturally: "2" before "10"), and the checks a dataset must pass before anything
is trained on it; those live here, below all of them, so no reader imports another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepstrata.errors import DataError

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_NATURAL = re.compile(r"(\d+)")


@dataclass
class TextDataset:
    """Raw strings with int64 labels ``[N]`` and class names, plus an official test split if any.

    ``task`` lets ``deepstrata.fit`` recognise a data object as text without a ``task=``.
    """

    texts: list[str]
    labels: np.ndarray
    classes: list[str]
    test_texts: list[str] | None = None
    test_labels: np.ndarray | None = None
    source: str = ""
    format: str = ""
    text_column: str | None = None
    label_column: str | None = None
    encoding: str = "utf-8"
    notes: list[str] = field(default_factory=list)
    task: str = "text"

    def __len__(self) -> int:
        return len(self.texts)


def decode_bytes(data: bytes, encoding: str, where: str | Path, *, line_offset: int = 0) -> str:
    """Decode ``data``; on a bad byte, name the line it is on and suggest ``--encoding``."""
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return data.decode(codec)
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1 + line_offset
        bad = data[err.start:err.end]
        raise DataError(f"{where}: line {line}: bytes {bad!r} are not valid {encoding}; pass --encoding with the "
                        f"file's encoding (e.g. latin-1 or cp1252)") from None
    except LookupError:
        raise DataError(f"--encoding: unknown codec {encoding!r}") from None


def is_number(value: str) -> bool:
    """Whether ``value`` (spaces aside) is written as a decimal number (``3``, ``-1.5``, ``2e3``)."""
    return bool(_NUMBER.fullmatch(value.strip()))


def natural_key(value: str) -> tuple:
    """Sort key that puts "2" before "10" and keeps strings in alphabetical order."""
    if is_number(value):
        return (0, float(value), value)
    return (1, 0.0, tuple(int(p) if p.isdigit() else p.lower() for p in _NATURAL.split(value)))


def check_classes(ds: TextDataset, path: Path | str) -> None:
    """Refuse data nothing can be learned from: no examples, no text in any of them, or one class only."""
    if len(ds.texts) == 0:
        raise DataError(f"{path}: no examples found")
    if not any(isinstance(t, str) and t.strip() for t in ds.texts):
        column = f" (column {ds.text_column!r})" if ds.text_column else ""
        raise DataError(f"{path}: every one of the {len(ds.texts)} texts{column} is empty or whitespace; "
                        f"there is nothing to learn from")
    present = np.unique(ds.labels)
    if len(present) < 2:
        name = ds.classes[int(present[0])] if len(present) else "?"
        column = f" in column {ds.label_column!r}" if ds.label_column else ""
        raise DataError(f"{path}: every example has the label {name!r}{column}; a classifier needs at least 2 classes")


def cap_per_class(ds: TextDataset, limit: int) -> TextDataset:
    """Keep at most ``limit`` examples of each class, the first met (``ds`` is changed and returned)."""
    keep: list[int] = []
    counts: dict[int, int] = {}
    for i, y in enumerate(ds.labels.tolist()):
        if counts.get(y, 0) < limit:
            counts[y] = counts.get(y, 0) + 1
            keep.append(i)
    ds.texts = [ds.texts[i] for i in keep]
    ds.labels = ds.labels[keep]
    return ds
