"""Text tables read into rows of string cells: CSV, TSV, JSONL/JSON and Parquet alike.

Labelled training data and unlabelled texts to predict both come as tables in these
four forms. This module reads any of them into one ``Table`` (strings, or ``None`` where
a JSON key is absent, and the line each row starts on), so column guessing
(``text_columns``) and error messages work the same whatever the form: every problem is
a ``DataError`` naming the file and the line. Typed cells (JSON, Parquet) are written as
strings by the shared ``tables.cell``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from deepstrata.data import tables
from deepstrata.data.text_dataset import decode_bytes, is_number
from deepstrata.errors import DataError


@dataclass
class Table:
    """Rows of string cells (``None`` where a key is absent), with the line each row starts on."""

    path: Path
    columns: list[str]
    rows: list[list[str | None]]
    lines: list[int]
    header: bool = True

    def column(self, name: str) -> int:
        return self.columns.index(name)


def read_table(path: str | Path, fmt: str, *, encoding: str = "utf-8") -> Table:
    """Read a CSV, TSV, JSONL/JSON or Parquet file into a ``Table``."""
    path = Path(path)
    if fmt == "parquet":
        return _read_parquet(path)
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path}: empty file; expected a header row and rows of text")
    text = decode_bytes(data, encoding, path)
    if fmt == "jsonl":
        return _read_json_lines(path, text)
    return _read_delimited(path, text, "\t" if fmt == "tsv" else ",")


def _read_delimited(path: Path, text: str, delimiter: str) -> Table:
    reader = tables.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[list[str | None]] = []
    lines: list[int] = []
    last_line = 0
    try:
        for record in reader:
            start, last_line = last_line + 1, reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            rows.append(list(record))
            lines.append(start)
    except csv.Error as err:
        raise DataError(f"{path}: line {reader.line_num}: not valid {'TSV' if delimiter == chr(9) else 'CSV'} "
                        f"({err})") from None
    if not rows:
        raise DataError(f"{path}: empty file; expected a header row and rows of text")
    first = rows[0]
    header = not any(is_number(cell) for cell in first)
    if header:
        columns = [str(cell).strip() for cell in first]
        rows, lines = rows[1:], lines[1:]
        if not rows:
            raise DataError(f"{path}: only a header row ({', '.join(columns)}); expected rows of text below it")
        duplicates = sorted({c for c in columns if columns.count(c) > 1})
        if duplicates:
            raise DataError(f"{path}: line 1: column {duplicates[0]!r} appears more than once in the header")
    else:
        columns = [f"column{i}" for i in range(1, len(first) + 1)]
    width = len(columns)
    for row, line in zip(rows, lines):
        if len(row) != width:
            expected = "as in the header" if header else "as in the first row"
            raise DataError(f"{path}: line {line}: expected {width} fields ({expected}), got {len(row)}")
    return Table(path=path, columns=columns, rows=rows, lines=lines, header=header)


def _read_json_lines(path: Path, text: str) -> Table:
    stripped = text.lstrip()
    records: list[tuple[int, object]] = []
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None
        records = [(0, item) for item in items]
    else:
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {number}: not valid JSON ({err.msg}); expected one object per line") from None
    if not records:
        raise DataError(f"{path}: empty file; expected one JSON object per line")
    columns: list[str] = []
    for number, record in records:
        if not isinstance(record, dict):
            where = f"line {number}" if number else "item"
            raise DataError(f"{path}: {where}: expected a JSON object with text and label keys, got {type(record).__name__}")
        for key in record:
            if key not in columns:
                columns.append(str(key))
    rows = [[tables.cell(record.get(name), json=True) for name in columns] for _, record in records]
    lines = [number if number else index + 1 for index, (number, _) in enumerate(records)]
    return Table(path=path, columns=columns, rows=rows, lines=lines)


def _read_parquet(path: Path) -> Table:
    columns, rows = tables.read_parquet(path, install="; install it with pip install 'deepstrata[text]'", json=True)
    if not rows:
        raise DataError(f"{path}: empty file; expected rows of text")
    return Table(path=path, columns=columns, rows=rows, lines=list(range(1, len(rows) + 1)))
