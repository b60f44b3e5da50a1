"""Text classification data: tables, folders and archives read into one ``TextDataset``.

Sources and how they are told apart:

* ``.csv`` / ``.tsv``: a header row (or none, when the first row holds a number, as in
  the AG News / Zhang et al. 2015 files: class index, then title and description);
* ``.jsonl`` (one object per line) and ``.json`` (a list of objects);
* ``.parquet`` (needs pyarrow, in the ``deepstrata[text]`` extra);
* ``.txt`` in fastText form (``__label__pos great film``);
* a folder of class sub-folders of ``.txt`` files, optionally under ``train/`` and
  ``test/`` (the IMDB ``aclImdb`` layout), as a directory or a ``.tar[.gz|.xz]`` read
  member by member without unpacking. An official test split is kept as the test set.

Columns are guessed from their names (``text``, ``review`` … / ``label``, ``sentiment`` …)
when that is unambiguous; the choice is saved with the run. Every problem with a file
raises ``DataError`` naming the file, the line or member, and what was expected.

This module is the public face: it picks the reader for a source and re-exports the
parts, which live in ``text_dataset`` (the dataset, decoding, checks), ``text_tables``
(CSV/TSV/JSONL/Parquet into a ``Table``), ``text_columns`` (column guessing),
``text_fasttext``, ``text_folders`` (class folders and archives) and ``text_split``.
"""

from __future__ import annotations

from pathlib import Path

from deepstrata.data.text_columns import LABEL_NAMES, TEXT_NAMES, joined_text, labelled_dataset, text_columns
from deepstrata.data.text_dataset import TextDataset, cap_per_class, check_classes, decode_bytes
from deepstrata.data.text_fasttext import read_fasttext
from deepstrata.data.text_folders import ARCHIVE_SUFFIXES, UNLABELLED_FOLDERS, read_text_folder
from deepstrata.data.text_split import TextSplits, split_text
from deepstrata.data.text_tables import Table, read_table
from deepstrata.errors import DataError

__all__ = [
    "ARCHIVE_SUFFIXES", "FORMATS", "LABEL_NAMES", "TEXT_NAMES", "UNLABELLED_FOLDERS",
    "Table", "TextDataset", "TextSplits",
    "decode_bytes", "detect_text_format", "joined_text", "load_text", "read_fasttext", "read_table",
    "read_text_folder", "read_texts", "split_text", "text_columns", "text_table",
]

FORMATS = ("csv", "tsv", "jsonl", "parquet", "fasttext", "folder")


def text_table(path: str | Path, text: str | list[str] | None = None, label: str | None = None, *,
               format: str | None = None, encoding: str = "utf-8") -> TextDataset:
    """A labelled table (CSV, TSV, JSONL, Parquet) or text folder, with its columns named or guessed.

    ``text`` may name several columns (a list, or ``"title,description"``), joined with a space.
    """
    if isinstance(text, (list, tuple)):
        text = ",".join(text)
    return load_text(path, format=format, text_column=text, label_column=label, encoding=encoding)


def load_text(source: str | Path, *, format: str | None = None, text_column: str | None = None,
              label_column: str | None = None, encoding: str = "utf-8",
              max_per_class: int | None = None) -> TextDataset:
    """Read a labelled text source (see the module docstring for the forms it takes).

    ``max_per_class`` keeps at most that many examples of each class (of each split),
    the first met in the file or archive: for quick looks and tests.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    fmt = format or detect_text_format(path)
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown text format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "folder":
        ds = read_text_folder(path, encoding=encoding, max_per_class=max_per_class)
    elif fmt == "fasttext":
        ds = read_fasttext(path, encoding=encoding)
    else:
        table = read_table(path, fmt, encoding=encoding)
        ds = labelled_dataset(table, text_column, label_column)
    if max_per_class is not None and fmt != "folder":
        ds = cap_per_class(ds, max_per_class)
    ds.source, ds.format, ds.encoding = str(source), fmt, encoding
    check_classes(ds, path)
    return ds


def detect_text_format(path: str | Path) -> str:
    """The text format of ``path``, from its suffix (or ``folder`` for a directory or a tar archive)."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir() or name.endswith(ARCHIVE_SUFFIXES):
        return "folder"
    for suffixes, fmt in (((".csv",), "csv"), ((".tsv", ".tab"), "tsv"), ((".jsonl", ".ndjson", ".json"), "jsonl"),
                          ((".parquet", ".pq"), "parquet"), ((".txt",), "fasttext")):
        if name.endswith(suffixes):
            return fmt
    raise DataError(f"{path}: cannot tell the text format from the name; expected .csv, .tsv, .jsonl, .json, "
                    f".parquet, .txt (fastText), a folder of class sub-folders or a .tar[.gz|.xz] of one")


def read_texts(source: str | Path, *, text_column: str | None = None, encoding: str = "utf-8") -> list[str]:
    """Unlabelled texts for ``predict`` and ``embed``: one per line of a ``.txt``, or a table's text column."""
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    name = path.name.lower()
    if name.endswith(".txt"):
        text = decode_bytes(path.read_bytes(), encoding, path)
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        lines = [line.rstrip("\r") for line in lines]
        if not lines:
            raise DataError(f"{path}: empty file; expected one text per line")
        return lines
    fmt = detect_text_format(path)
    if fmt in ("folder", "fasttext"):
        raise DataError(f"{path}: expected a .txt file (one text per line) or a table (.csv, .tsv, .jsonl, .parquet)")
    table = read_table(path, fmt, encoding=encoding)
    columns = text_columns(table, text_column, label_column=None)
    return [joined_text(table, columns, row) for row in range(len(table.rows))]
