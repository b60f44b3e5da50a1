"""What every reader of delimited text shares: a ``csv.reader`` that takes any valid CSV.

Python's ``csv`` refuses a field over 131,072 characters (``csv.field_size_limit``'s
default) with "field larger than field limit", though such a cell is valid CSV (a long
review, an article body). Every CSV/TSV reader in deepstrata goes through ``reader``,
which lifts the limit to the largest a C ``long`` holds on every platform.
"""

from __future__ import annotations

import csv
from typing import Iterable

# 2**31 - 1: csv.field_size_limit takes a C long, 32 bits on Windows (sys.maxsize overflows there).
FIELD_LIMIT = 2**31 - 1


def reader(lines: Iterable[str], **kwargs):
    """``csv.reader(lines, **kwargs)`` with no practical limit on a field's length."""
    if csv.field_size_limit() < FIELD_LIMIT:
        csv.field_size_limit(FIELD_LIMIT)
    return csv.reader(lines, **kwargs)
