"""Interaction logs read from files: CSV/TSV, Parquet and the MovieLens formats, checked row by row.

A log arrives in many shapes: a CSV with a header, a header-less file of numbers, a
Parquet file, MovieLens ``u.data``/``ratings.dat``/``ratings.csv`` (a directory holding
one stands for it, with its titles picked up). This module tells them apart, finds the
user, item, rating and time columns, and reads the events as strings into a ``RawLog``;
a bad value is a ``DataError`` naming the file, the line (or row) and the column.
Text files are streamed, so a log of millions of lines is never held as text; Parquet
cells are written as strings by the shared ``tables.cell``.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
from pathlib import Path
from typing import Iterator

import numpy as np

from deepstrata.config_numbers import is_number
from deepstrata.data import tables
from deepstrata.data.interaction_log import RawLog
from deepstrata.errors import DataError

USER_NAMES = ("user_id", "userid", "user", "uid", "users", "customer_id", "visitor_id", "visitorid", "session_id")
ITEM_NAMES = ("item_id", "itemid", "item", "iid", "items", "movie_id", "movieid", "product_id", "productid",
              "track_id", "book_id", "isbn")
RATING_NAMES = ("rating", "ratings", "score", "stars")
TIME_NAMES = ("timestamp", "ts", "time", "datetime", "date", "event_time", "unix_time")
MOVIELENS_FILES = ("u.data", "ratings.dat", "ratings.csv")
HEADERLESS_NAMES = ("user_id", "item_id", "rating", "timestamp")


def resolve_source(source: str | Path) -> Path:
    """A file, or a directory holding one of the MovieLens rating files."""
    path = Path(source)
    if path.is_dir():
        for name in MOVIELENS_FILES:
            if (path / name).is_file():
                return path / name
        raise DataError(f"{path}: a directory without an interaction log "
                        f"(expected one of {', '.join(MOVIELENS_FILES)})")
    if not path.is_file():
        raise DataError(f"{path}: interaction log not found")
    return path


def detect_format(path: Path, requested: str = "auto") -> str:
    """``movielens-100k``, ``movielens-dat``, ``parquet``, ``tsv``, ``csv`` or ``headerless``."""
    name = path.name.lower()
    if requested == "parquet" or (requested == "auto" and name.endswith(".parquet")):
        return "parquet"
    if requested in ("auto", "movielens"):
        if name == "u.data":
            return "movielens-100k"
        if name == "ratings.dat":
            return "movielens-dat"
    with path.open("r", encoding="utf-8", errors="replace", newline="") as handle:
        first = handle.readline()
    if not first.strip():
        raise DataError(f"{path}: empty file (no interactions)")
    if "::" in first:
        return "movielens-dat"
    delimiter = "\t" if requested == "tsv" or (requested != "csv" and "\t" in first) else ","
    fields_ = first.rstrip("\r\n").split(delimiter)
    if all(is_number(value.strip()) for value in fields_ if value.strip()) and 2 <= len(fields_) <= 4:
        return "headerless-tsv" if delimiter == "\t" else "headerless-csv"
    return "tsv" if delimiter == "\t" else "csv"


def _text_rows(path: Path, fmt: str) -> Iterator[list[str]]:
    """Rows of a text log, streamed (a log of millions of lines is never held as text)."""
    if fmt.startswith("movielens"):
        separator = "\t" if fmt == "movielens-100k" else "::"
        encoding = "utf-8" if fmt == "movielens-100k" else "latin-1"
        with path.open("r", encoding=encoding, errors="replace") as handle:
            for line in handle:
                yield line.rstrip("\r\n").split(separator)
        return
    delimiter = "\t" if fmt in ("tsv", "headerless-tsv") else ","
    with path.open("r", encoding="utf-8", errors="replace", newline="") as handle:
        yield from tables.reader(handle, delimiter=delimiter)


def _read_rows(path: Path, fmt: str) -> tuple[list[str], Iterator[list[str]], int]:
    """Header, rows of strings, and the file line number of the first row."""
    if fmt == "parquet":
        header, rows = tables.read_parquet(path, install=" (pip install 'deepstrata[parquet]')", missing="",
                                           iso_times=True)
        return header, iter(rows), 0
    rows = _text_rows(path, fmt)
    first = next(rows, None)
    if first is None:
        raise DataError(f"{path}: empty file (no interactions)")
    if fmt.startswith(("movielens", "headerless")):
        width = len(first)
        header = list(HEADERLESS_NAMES[:width]) if width <= 4 else [f"column{i + 1}" for i in range(width)]
        return header, itertools.chain([first], rows), 1
    return [name.strip() for name in first], rows, 2




def _pick_column(path: Path, header: list[str], given: str | None, candidates: tuple[str, ...], what: str,
                 flag: str, required: bool) -> int | None:
    if given is not None:
        if given in header:
            return header.index(given)
        raise DataError(f"{path}: no {what} column {given!r} (columns: {', '.join(header)})")
    lowered = [name.lower() for name in header]
    for candidate in candidates:
        if candidate in lowered:
            return lowered.index(candidate)
    if required:
        raise DataError(f"{path}: no {what} column found (columns: {', '.join(header)}); looked for "
                        f"{', '.join(candidates[:3])} …", hint=f"name it with {flag}")
    return None


def _parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(text) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.timestamp()


def _movielens_titles(path: Path) -> dict[str, str]:
    """Titles from the MovieLens item file beside the ratings, if present."""
    folder = path.parent
    titles: dict[str, str] = {}
    if (folder / "u.item").is_file():
        for line in (folder / "u.item").read_text(encoding="latin-1").splitlines():
            parts = line.split("|")
            if len(parts) > 1:
                titles[parts[0]] = parts[1]
    elif (folder / "movies.dat").is_file():
        for line in (folder / "movies.dat").read_text(encoding="latin-1").splitlines():
            parts = line.split("::")
            if len(parts) > 1:
                titles[parts[0]] = parts[1]
    elif (folder / "movies.csv").is_file() and path.name.lower() == "ratings.csv":
        with (folder / "movies.csv").open("r", encoding="utf-8", errors="replace", newline="") as handle:
            rows = tables.reader(handle)
            header = [name.lower() for name in next(rows, [])]
            if "movieid" in header and "title" in header:
                id_at, title_at = header.index("movieid"), header.index("title")
                for row in rows:
                    if len(row) > max(id_at, title_at):
                        titles[row[id_at]] = row[title_at]
    return titles


def read_raw_log(
    source: str | Path,
    *,
    user_column: str | None = None,
    item_column: str | None = None,
    rating_column: str | None = None,
    time_column: str | None = None,
    min_rating: float | None = None,
    format: str = "auto",
) -> RawLog:
    """Read events as strings; check every value that is used, naming the row of a bad one."""
    path = resolve_source(source)
    fmt = detect_format(path, format)
    header, rows, first_line = _read_rows(path, fmt)
    user_at = _pick_column(path, header, user_column, USER_NAMES, "user", "--user-column", True)
    item_at = _pick_column(path, header, item_column, ITEM_NAMES, "item", "--item-column", True)
    time_at = _pick_column(path, header, time_column, TIME_NAMES, "time", "--time-column", False)
    rating_at = None
    if rating_column is not None or min_rating is not None:
        rating_at = _pick_column(path, header, rating_column, RATING_NAMES, "rating", "--rating-column", True)
    row_label = "row" if fmt == "parquet" else "line"
    needed = max(i for i in (user_at, item_at, time_at, rating_at) if i is not None)
    users: list[str] = []
    items: list[str] = []
    times: list[float] = []
    below = 0
    blank = 0
    for offset, row in enumerate(rows):
        where = f"{path}:{row_label} {offset + first_line}"
        if not any(cell.strip() for cell in row):
            blank += 1
            continue
        if len(row) <= needed:
            raise DataError(f"{where}: {len(row)} fields, expected at least {needed + 1} ({', '.join(header)})")
        user, item = row[user_at].strip(), row[item_at].strip()
        if not user or not item:
            raise DataError(f"{where}: empty {header[user_at] if not user else header[item_at]}")
        if rating_at is not None:
            text = row[rating_at].strip()
            try:
                rating = float(text)
            except ValueError:
                raise DataError(f"{where}: rating {text!r} in column {header[rating_at]!r} is not a number") from None
            if not math.isfinite(rating):
                raise DataError(f"{where}: rating {text!r} in column {header[rating_at]!r} is not a finite number")
            if min_rating is not None and rating < min_rating:
                below += 1
                continue
        if time_at is not None:
            text = row[time_at].strip()
            try:
                times.append(_parse_time(text))
            except ValueError:
                raise DataError(f"{where}: time {text!r} in column {header[time_at]!r} is neither a number "
                                f"nor an ISO date") from None
        else:
            times.append(float(offset))
        users.append(user)
        items.append(item)
    notes = []
    if blank:
        notes.append(f"{blank} blank rows skipped")
    if below:
        notes.append(f"{below} rows with {header[rating_at]} < {min_rating:g} are not interactions "
                     "(implicit threshold)")
    if time_at is None:
        notes.append("no time column: the file's order is taken as time")
    if not users and not below:
        raise DataError(f"{path}: no interactions (the log is empty apart from its header)")
    if not users:
        raise DataError(f"{path}: no interactions left (all {below} rows have {header[rating_at]} < {min_rating:g})")
    titles = _movielens_titles(path) if path.name.lower() in MOVIELENS_FILES or fmt.startswith("movielens") else {}
    return RawLog(users, items, np.asarray(times, dtype=np.float64), str(path), fmt, titles, tuple(notes),
                  time_at is not None)
