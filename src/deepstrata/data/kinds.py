"""What a data source plainly is from its name, so that a verb can refuse the wrong kind before reading it."""

from __future__ import annotations

from pathlib import Path

_TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".pq", ".txt")
_LOG_NAMES = ("u.data", "ratings.dat")


def source_kind(source: str | Path) -> str | None:
    """An image data set or file, a table, an interaction log, or None when the name does not say."""
    from deepstrata.data import datasets
    from deepstrata.data.images import IMAGE_EXTENSIONS

    text = str(source)
    if (text == "digits" or datasets.canonical_name(text) is not None) and not Path(text).exists():
        return "an image data set"
    name = Path(text).name.lower()
    if name in _LOG_NAMES:
        return "an interaction log"
    if name.endswith(IMAGE_EXTENSIONS):
        return "an image file"
    if name.endswith(_TABLE_SUFFIXES):
        return "a table"
    return None
