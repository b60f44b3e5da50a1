"""What every table reader shares: a ``csv.reader`` that takes any valid CSV, and one cell reader.

Python's ``csv`` refuses a field over 131,072 characters (``csv.field_size_limit``'s
default) with "field larger than field limit", though such a cell is valid CSV (a long
review, an article body). Every CSV/TSV reader in deepstrata goes through ``reader``,
which lifts the limit to the largest a C ``long`` holds on every platform.

Parquet columns and JSON objects hold typed values (ints, floats, bools, dates, lists),
while the readers above them work on strings, as a CSV gives. ``cell`` is the one rule
that turns such a value into a cell's string, and ``read_parquet`` the one Parquet
reader, so the text tables and the interaction logs spell a value the same way. The two
keep their one historical difference as named options: text tables write bools and
nested values as JSON does (``json=True``), logs write times in ISO form (``iso_times=True``).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json as _json
from pathlib import Path
from typing import Iterable

from deepstrata.errors import DataError

# 2**31 - 1: csv.field_size_limit takes a C long, 32 bits on Windows (sys.maxsize overflows there).
FIELD_LIMIT = 2**31 - 1


def reader(lines: Iterable[str], **kwargs):
    """``csv.reader(lines, **kwargs)`` with no practical limit on a field's length."""
    if csv.field_size_limit() < FIELD_LIMIT:
        csv.field_size_limit(FIELD_LIMIT)
    return csv.reader(lines, **kwargs)


def cell(value, *, missing: str | None = None, json: bool = False, iso_times: bool = False) -> str | None:
    """A typed value (from Parquet or JSON) as the string a table cell holds.

    ``None`` becomes ``missing``; a float with no fraction is written as an int (``5.0`` →
    ``"5"``, as a CSV of ratings says it); everything else is ``str(value)``, except that
    with ``json`` a bool is ``true``/``false`` and a list or dict its JSON text, and with
    ``iso_times`` a date or datetime is its ISO 8601 form.
    """
    kind = type(value)
    if kind is str or kind is int:  # the common cells first: a log of millions of ids
        return str(value)
    if value is None:
        return missing
    if isinstance(value, bool):
        return str(value).lower() if json else str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if json and isinstance(value, (dict, list)):
        return _json.dumps(value, ensure_ascii=False)
    if iso_times and isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    return str(value)


def read_parquet(path: Path, *, install: str, missing: str | None = None, json: bool = False,
                 iso_times: bool = False) -> tuple[list[str], list[list[str | None]]]:
    """The column names and rows of cells (``cell`` with the options given) of a Parquet file.

    ``install`` ends the message when pyarrow is missing (how to install it). A file
    pyarrow cannot read is a ``DataError`` naming it.
    """
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow{install}") from None
    try:
        table = pq.read_table(path)
        header = list(table.column_names)
        columns = [table.column(name).to_pylist() for name in header]
    except Exception as err:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
    rows = [[cell(value, missing=missing, json=json, iso_times=iso_times) for value in row] for row in zip(*columns)]
    return header, rows
