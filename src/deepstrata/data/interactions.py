"""Interaction logs: who interacted with what, and when — read, cleaned, id-mapped and split.

Readers accept a CSV/TSV with a header, Parquet (with the optional ``pyarrow``), and the
MovieLens formats ``u.data`` (100K), ``ratings.dat`` (1M/10M) and ``ratings.csv``
(20M/25M/latest), recognised by name or, for a header-less file, by shape. A directory
holding one of those files stands for it; MovieLens titles (``u.item``, ``movies.dat``,
``movies.csv``) next to it are picked up.

Nothing is dropped silently: merged duplicate events, rows below ``min_rating`` and
users too short to evaluate are counted in ``notes`` and in the split's ``counts``.

Splits never let the future in. Leave-last-out holds out each user's last event (test)
and second to last (validation), ordered by time; the history a prediction sees holds
only that user's earlier events. The temporal split cuts the whole log at two points in
time, so training holds only events strictly before every validation and test event.
(Leave-last-out is per user: another user's training events may be later than this
user's test event; the temporal split is the one with a global time order.)
"""

from __future__ import annotations

import datetime as _dt
import io
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from deepstrata.data import tables
from deepstrata.errors import ConfigError, DataError

USER_NAMES = ("user_id", "userid", "user", "uid", "users", "customer_id", "visitor_id", "visitorid", "session_id")
ITEM_NAMES = ("item_id", "itemid", "item", "iid", "items", "movie_id", "movieid", "product_id", "productid",
              "track_id", "book_id", "isbn")
RATING_NAMES = ("rating", "ratings", "score", "stars")
TIME_NAMES = ("timestamp", "ts", "time", "datetime", "date", "event_time", "unix_time")
MOVIELENS_FILES = ("u.data", "ratings.dat", "ratings.csv")
HEADERLESS_NAMES = ("user_id", "item_id", "rating", "timestamp")


@dataclass(frozen=True)
class InteractionLog:
    """A cleaned log: one event per (user, item), ids mapped to contiguous indices.

    ``users``/``items`` index ``user_ids``/``item_ids``; ``times`` orders events (the
    file order when the log has no time column). ``titles`` maps item ids to titles
    where the data has them.
    """

    users: np.ndarray
    items: np.ndarray
    times: np.ndarray
    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    source: str
    format: str
    titles: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    has_time: bool = True

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class RawLog:
    """Events as read, ids still strings, before mapping and de-duplication."""

    users: list[str]
    items: list[str]
    times: np.ndarray
    source: str
    format: str
    titles: dict[str, str]
    notes: tuple[str, ...]
    has_time: bool


# ---------------------------------------------------------------- reading


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
    if all(_is_number(value.strip()) for value in fields_ if value.strip()) and 2 <= len(fields_) <= 4:
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
        header, rows = _read_parquet(path)
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


def _read_parquet(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install 'deepstrata[parquet]')") from None
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
    header = list(table.column_names)
    columns = [table.column(name).to_pylist() for name in header]
    rows = [["" if value is None else _cell(value) for value in row] for row in zip(*columns)]
    return header, rows


def _cell(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    return str(value)


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


def _sorted_ids(ids: set[str] | list[str]) -> list[str]:
    """Numeric ids in numeric order, other ids in text order (stable across runs)."""
    ids = list(ids)
    try:
        return sorted(ids, key=lambda value: (float(value), value))
    except ValueError:
        return sorted(ids)


def extend_vocab(known: tuple[str, ...] | list[str], seen: list[str]) -> tuple[str, ...]:
    """Known ids keep their index; new ids are appended in sorted order."""
    index = set(known)
    return tuple(known) + tuple(_sorted_ids({value for value in seen if value not in index}))


def build_log(raw: RawLog, *, user_ids: tuple[str, ...] = (), item_ids: tuple[str, ...] = ()) -> InteractionLog:
    """Map ids to indices (extending the given vocabularies) and merge duplicate events.

    A (user, item) pair seen more than once keeps its latest event: the user's current
    state, and no item is both in a user's history and a target.
    """
    user_vocab = extend_vocab(user_ids, raw.users)
    item_vocab = extend_vocab(item_ids, raw.items)
    user_index = {value: i for i, value in enumerate(user_vocab)}
    item_index = {value: i for i, value in enumerate(item_vocab)}
    users = np.fromiter((user_index[u] for u in raw.users), dtype=np.int64, count=len(raw.users))
    items = np.fromiter((item_index[i] for i in raw.items), dtype=np.int64, count=len(raw.items))
    return _dedupe(InteractionLog(users, items, raw.times, user_vocab, item_vocab, raw.source, raw.format,
                                  dict(raw.titles), raw.notes, raw.has_time))


def _dedupe(log: InteractionLog, extra_note: bool = True) -> InteractionLog:
    order = np.lexsort((np.arange(len(log)), log.times))
    keys = log.users[order] * max(log.num_items, 1) + log.items[order]
    _, last_from_end = np.unique(keys[::-1], return_index=True)
    keep = np.sort(order[len(order) - 1 - last_from_end])
    merged = len(log) - len(keep)
    notes = log.notes
    if merged and extra_note:
        notes = notes + (f"{merged} repeated (user, item) events merged into their latest",)
    return InteractionLog(log.users[keep], log.items[keep], log.times[keep], log.user_ids, log.item_ids,
                          log.source, log.format, log.titles, notes, log.has_time)


def read_interactions(source: str | Path, **options) -> InteractionLog:
    """Read, check, map and de-duplicate an interaction log (see ``read_raw_log`` for options)."""
    return build_log(read_raw_log(source, **options))


def merge_logs(old: InteractionLog, new: RawLog) -> tuple[InteractionLog, dict]:
    """``old`` plus the events of ``new``: old ids keep their indices, new ids are appended."""
    added = build_log(new, user_ids=old.user_ids, item_ids=old.item_ids)
    times = added.times
    if not new.has_time:
        times = times + (old.times.max() + 1.0 if len(old) else 0.0)
    combined = InteractionLog(
        np.concatenate([old.users, added.users]), np.concatenate([old.items, added.items]),
        np.concatenate([old.times, times]), added.user_ids, added.item_ids,
        f"{old.source} + {new.source}", old.format, {**old.titles, **added.titles}, old.notes, old.has_time,
    )
    merged = _dedupe(combined, extra_note=False)
    stats = {
        "new_events": int(len(added)),
        "new_users": int(added.num_users - old.num_users),
        "new_items": int(added.num_items - old.num_items),
        "merged_duplicates": int(len(combined) - len(merged)),
    }
    return merged, stats


# ---------------------------------------------------------------- saving with a run


def save_log(log: InteractionLog) -> tuple[bytes, dict]:
    """The log as ``.npz`` bytes (no pickles) plus a JSON-able vocabulary."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, users=log.users, items=log.items, times=log.times)
    vocab = {"user_ids": list(log.user_ids), "item_ids": list(log.item_ids), "titles": log.titles,
             "source": log.source, "format": log.format, "notes": list(log.notes), "has_time": log.has_time}
    return buffer.getvalue(), vocab


def load_log(npz_path: Path, vocab_path: Path) -> InteractionLog:
    """The log a run saved (``save_log``), checked: a damaged or inconsistent file is a ``RunError`` naming it.

    Arrays are read without pickles; every index must point into the vocabulary, and the
    three arrays must be equally long, so a file cut short or swapped for another run's
    cannot give recommendations for the wrong users.
    """
    from deepstrata import runfiles
    from deepstrata.errors import RunError

    for path in (npz_path, vocab_path):
        if not path.is_file():
            raise RunError(f"{path}: not found; the run did not save its interaction log")
    arrays = runfiles.read_npz(npz_path, ("users", "items", "times"))
    users, items, times = arrays["users"], arrays["items"], arrays["times"]
    vocab = runfiles.read_json(vocab_path)
    user_ids = runfiles.string_list(vocab, "user_ids", vocab_path)
    item_ids = runfiles.string_list(vocab, "item_ids", vocab_path)
    source = runfiles.field(vocab, "source", str, vocab_path)
    fmt = runfiles.field(vocab, "format", str, vocab_path)
    titles = vocab.get("titles", {})
    notes = vocab.get("notes", [])
    if not isinstance(titles, dict) or not isinstance(notes, list):
        raise runfiles.damaged(vocab_path, "'titles' must be an object and 'notes' a list")
    if not len(users) == len(items) == len(times):
        raise runfiles.damaged(npz_path, f"arrays of different lengths (users {len(users)}, items {len(items)}, "
                                         f"times {len(times)})")
    for name, values, ids in (("users", users, user_ids), ("items", items, item_ids)):
        if values.dtype.kind not in "iu":
            raise runfiles.damaged(npz_path, f"{name} are {values.dtype}, expected integer indices")
        if len(values) and (values.min() < 0 or values.max() >= len(ids)):
            raise runfiles.damaged(npz_path, f"{name} index {int(values.max())} is outside the {len(ids)} ids "
                                             f"of {vocab_path.name}")
    return InteractionLog(users, items, times,
                          tuple(user_ids), tuple(item_ids), source, fmt,
                          dict(titles), tuple(str(n) for n in notes),
                          bool(vocab.get("has_time", True)))


# ---------------------------------------------------------------- splits


@dataclass(frozen=True)
class EvalSet:
    """Users to evaluate, each with the history a prediction may see and the held-out targets.

    CSR layout: user ``users[r]`` has history ``history[history_ptr[r]:history_ptr[r+1]]``
    (item indices in time order) and targets ``targets[target_ptr[r]:target_ptr[r+1]]``.
    """

    users: np.ndarray
    history_ptr: np.ndarray
    history: np.ndarray
    target_ptr: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def histories(self, rows: range | np.ndarray) -> list[np.ndarray]:
        return [self.history[self.history_ptr[r]:self.history_ptr[r + 1]] for r in rows]

    def target_lists(self, rows: range | np.ndarray) -> list[np.ndarray]:
        return [self.targets[self.target_ptr[r]:self.target_ptr[r + 1]] for r in rows]


def _eval_set(users: list[int], histories: list[np.ndarray], targets: list[np.ndarray]) -> EvalSet:
    def csr(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        ptr = np.zeros(len(parts) + 1, dtype=np.int64)
        ptr[1:] = np.cumsum([len(p) for p in parts]) if parts else []
        flat = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
        return ptr, flat

    h_ptr, h = csr(histories)
    t_ptr, t = csr(targets)
    return EvalSet(np.asarray(users, dtype=np.int64), h_ptr, h, t_ptr, t)


@dataclass(frozen=True)
class RecSplit:
    """Training events (time-ordered per user) and the validation and test sets."""

    method: str
    num_users: int
    num_items: int
    train_users: np.ndarray
    train_items: np.ndarray
    train_times: np.ndarray
    val: EvalSet
    test: EvalSet
    counts: dict

    def train_sequences(self) -> list[np.ndarray]:
        """Each user's training items in time order (empty for users with none)."""
        return _group(self.train_users, self.train_items, self.num_users)

    def describe(self) -> dict:
        return {"method": self.method, "train": int(len(self.train_users)), "val": int(len(self.val)),
                "test": int(len(self.test)), **self.counts}


def _user_order(log: InteractionLog) -> np.ndarray:
    """Event indices sorted by user, then time, then file order."""
    return np.lexsort((np.arange(len(log)), log.times, log.users))


def _group(users: np.ndarray, items: np.ndarray, num_users: int) -> list[np.ndarray]:
    bounds = np.searchsorted(users, np.arange(num_users + 1))
    return [items[bounds[u]:bounds[u + 1]] for u in range(num_users)]


def leave_last_out(log: InteractionLog) -> RecSplit:
    """Per user by time: validation = second to last event, test = last, training = the rest.

    Users with two events give one to training and one to test; users with one event
    train only. Both are counted, not dropped.
    """
    order = _user_order(log)
    users, items, times = log.users[order], log.items[order], log.times[order]
    bounds = np.searchsorted(users, np.arange(log.num_users + 1))
    lengths = np.diff(bounds)
    keep = np.ones(len(users), dtype=bool)
    val_u, val_h, val_t, test_u, test_h, test_t = [], [], [], [], [], []
    for u in np.flatnonzero(lengths >= 2):
        start, end = bounds[u], bounds[u + 1]
        seq = items[start:end]
        test_u.append(int(u))
        test_h.append(seq[:-1])
        test_t.append(seq[-1:])
        keep[end - 1] = False
        if end - start >= 3:
            val_u.append(int(u))
            val_h.append(seq[:-2])
            val_t.append(seq[-2:-1])
            keep[end - 2] = False
    counts = {
        "users": int(log.num_users), "items": int(log.num_items), "interactions": int(len(log)),
        "users_without_interactions": int((lengths == 0).sum()),
        "users_single_interaction": int((lengths == 1).sum()),
        "users_not_in_test": int((lengths < 2).sum()),
        "users_not_in_val": int((lengths < 3).sum()),
    }
    return RecSplit("leave-last-out", log.num_users, log.num_items, users[keep], items[keep], times[keep],
                    _eval_set(val_u, val_h, val_t), _eval_set(test_u, test_h, test_t), counts)


def temporal_split(log: InteractionLog, val_fraction: float = 0.1, test_fraction: float = 0.1) -> RecSplit:
    """Cut the log at two moments: training strictly before validation, validation before test.

    A user is evaluated on a period when they have events in it and a history before it;
    their targets are the items of that period. Users with no earlier history (cold
    users) and targets never seen in training are counted.
    """
    if not log.has_time:
        raise ConfigError(f"{log.source}: the temporal split needs a time column (--time-column)")
    ordered = np.sort(log.times)
    n = len(ordered)
    t_val = ordered[min(n - 1, int(round(n * (1.0 - val_fraction - test_fraction))))]
    t_test = ordered[min(n - 1, int(round(n * (1.0 - test_fraction))))]
    if t_val == ordered[0] or t_test <= t_val:
        raise DataError(f"{log.source}: too few distinct times for a temporal split "
                        f"(validation starts at {t_val:g}, test at {t_test:g})")
    period = np.where(log.times < t_val, 0, np.where(log.times < t_test, 1, 2))
    order = _user_order(log)
    users, items, period = log.users[order], log.items[order], period[order]
    bounds = np.searchsorted(users, np.arange(log.num_users + 1))
    sets = []
    cold = {1: 0, 2: 0}
    for part in (1, 2):
        e_u, e_h, e_t = [], [], []
        for u in range(log.num_users):
            seq, when = items[bounds[u]:bounds[u + 1]], period[bounds[u]:bounds[u + 1]]
            targets = seq[when == part]
            if not len(targets):
                continue
            history = seq[when < part]
            if not len(history):
                cold[part] += 1
                continue
            e_u.append(u)
            e_h.append(history)
            e_t.append(targets)
        sets.append(_eval_set(e_u, e_h, e_t))
    train = period == 0
    seen = np.zeros(log.num_items, dtype=bool)
    seen[items[train]] = True
    counts = {
        "users": int(log.num_users), "items": int(log.num_items), "interactions": int(len(log)),
        "val_starts": float(t_val), "test_starts": float(t_test),
        "cold_users_not_in_val": cold[1], "cold_users_not_in_test": cold[2],
        "test_targets_unseen_in_training": int((~seen[sets[1].targets]).sum()),
        "users_single_interaction": int((np.diff(bounds) == 1).sum()),
    }
    return RecSplit("temporal", log.num_users, log.num_items, users[train], items[train], log.times[order][train],
                    sets[0], sets[1], counts)


def split_log(log: InteractionLog, method: str = "leave-last-out", *, val_fraction: float = 0.1,
              test_fraction: float = 0.1) -> RecSplit:
    if method == "leave-last-out":
        return leave_last_out(log)
    if method == "temporal":
        return temporal_split(log, val_fraction, test_fraction)
    raise ConfigError(f"--split: got {method!r}, expected leave-last-out or temporal")
