"""Which columns of a text table hold the text and the label, and the dataset they give.

Most tables name their columns (``review``, ``sentiment``); the Zhang et al. (2015) files
(AG News, DBpedia, Yelp …) have no header, a class index first and text after. Columns are
guessed here when that is unambiguous, and named in a ``DataError`` with the flag to pass
when not; the chosen columns are kept on the ``TextDataset`` so the run can save them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from deepstrata.data.text_dataset import TextDataset, natural_key
from deepstrata.data.text_tables import Table
from deepstrata.errors import DataError

TEXT_NAMES = ("text", "review", "sentence", "content", "body", "document", "comment", "message", "tweet",
              "utterance", "question", "abstract")
LABEL_NAMES = ("label", "labels", "sentiment", "class", "category", "target", "topic", "polarity", "intent",
               "y", "stars", "rating")
_ZHANG_ENTITY = re.compile(r" ?#(\d{2,5});")


def _where(table: Table, row: int) -> str:
    kind = "row" if table.path.suffix.lower() in (".parquet", ".pq") else "line"
    return f"{table.path}: {kind} {table.lines[row]}"


def _find_column(table: Table, name: str, role: str) -> str:
    if name in table.columns:
        return name
    lowered = {c.lower(): c for c in table.columns}
    if name.lower() in lowered:
        return lowered[name.lower()]
    flag = "--text-column" if role == "text" else "--label-column"
    raise DataError(f"{table.path}: no {role} column {name!r}; the columns are: {', '.join(table.columns)}",
                    hint=f"name another with {flag}")


def _zhang_layout(table: Table) -> bool:
    """Headerless, first column small positive class indices, the rest text (AG News, DBpedia, Yelp …)."""
    if table.header or len(table.columns) < 2:
        return False
    first = [row[0] or "" for row in table.rows]
    return all(v.strip().isdigit() for v in first) and len(set(first)) <= 100


def text_columns(table: Table, text_column: str | None, label_column: str | None) -> list[str]:
    if text_column is not None:
        if text_column in table.columns:
            return [text_column]
        return [_find_column(table, part.strip(), "text") for part in text_column.split(",") if part.strip()]
    if _zhang_layout(table):
        return table.columns[1:]
    candidates = [c for c in table.columns if c != label_column]
    named = [c for c in candidates if c.lower() in TEXT_NAMES]
    if len(named) == 1:
        return named
    if len(candidates) == 1:
        return candidates
    if not named and candidates:
        # Otherwise only a column whose texts are far longer than every other's is an unambiguous guess.
        lengths = sorted(((_mean_length(table, c), c) for c in candidates), reverse=True)
        if len(lengths) == 1 or lengths[0][0] >= 3 * max(lengths[1][0], 1.0):
            return [lengths[0][1]]
    raise DataError(f"{table.path}: cannot tell which column holds the text (columns: {', '.join(table.columns)})",
                    hint="name it with --text-column")


def _label_column(table: Table, label_column: str | None, text_columns: list[str] | None) -> str:
    if label_column is not None:
        return _find_column(table, label_column, "label")
    if _zhang_layout(table):
        return table.columns[0]
    candidates = [c for c in table.columns if not text_columns or c not in text_columns]
    named = [c for c in candidates if c.lower() in LABEL_NAMES]
    if len(named) >= 1:
        # The first of LABEL_NAMES wins ("label" before "rating"), so the choice does not depend on column order.
        return min(named, key=lambda c: LABEL_NAMES.index(c.lower()))
    if len(candidates) == 1:
        return candidates[0]
    label_like = [c for c in candidates if _label_like(table, c)]
    if len(label_like) == 1:
        return label_like[0]
    raise DataError(f"{table.path}: cannot tell which column holds the labels (columns: {', '.join(table.columns)})",
                    hint="name it with --label-column")


def _mean_length(table: Table, column: str) -> float:
    index = table.column(column)
    return float(np.mean([len(row[index] or "") for row in table.rows]))


def _label_like(table: Table, column: str) -> bool:
    """Few distinct short values: a class column rather than text, ids or numbers."""
    index = table.column(column)
    values = [row[index] for row in table.rows]
    distinct = set(values)
    return len(distinct) <= min(100, max(2, len(values) // 2)) and _mean_length(table, column) <= 30


def joined_text(table: Table, columns: list[str], row: int) -> str:
    cells = [table.rows[row][table.column(c)] for c in columns]
    return " ".join(c for c in cells if c)


def _zhang_unescape(text: str) -> str:
    """The Zhang et al. files write a line break as a bare backslash and ``&#36;`` as `` #36;``."""
    return _ZHANG_ENTITY.sub(lambda m: chr(int(m.group(1))), text.replace("\\", " "))


def labelled_dataset(table: Table, text_column: str | None, label_column: str | None) -> TextDataset:
    """The ``TextDataset`` of a table: its text and label columns named or guessed, labels checked."""
    if text_column is not None and label_column is None:
        texts = text_columns(table, text_column, None)
        label = _label_column(table, None, texts)
    else:
        label = _label_column(table, label_column, None if text_column is None else [text_column])
        texts = text_columns(table, text_column, label)
    if label in texts:
        raise DataError(f"{table.path}: column {label!r} cannot be both the text and the label")
    notes: list[str] = []
    zhang = _zhang_layout(table) and text_column is None and label_column is None
    index = table.column(label)
    raw_labels: list[str] = []
    for row in range(len(table.rows)):
        value = table.rows[row][index]
        if value is None or not value.strip():
            raise DataError(f"{_where(table, row)}: no label in column {label!r}; every row needs one")
        raw_labels.append(value.strip())
    texts_out = [joined_text(table, texts, row) for row in range(len(table.rows))]
    classes = sorted(set(raw_labels), key=natural_key)
    if zhang:
        texts_out = [_zhang_unescape(t) for t in texts_out]
        names = _classes_file(table.path, classes)
        notes.append("no header row: column1 is the class index, the other columns are joined as the text"
                     + (f"; class names from {table.path.parent / 'classes.txt'}" if names else ""))
        notes.append("unescaped the Zhang et al. quirks (a backslash for a line break, ' #36;' for '$')")
    lookup = {name: i for i, name in enumerate(classes)}
    labels = np.array([lookup[v] for v in raw_labels], dtype=np.int64)
    if zhang and names:
        classes = names
    empty = sum(1 for t in texts_out if not t.strip())
    if empty:
        notes.append(f"{empty} empty text(s) kept (they are classified from no tokens)")
    return TextDataset(texts=texts_out, labels=labels, classes=classes, text_column=",".join(texts),
                       label_column=label, notes=notes)


def _classes_file(path: Path, indices: list[str]) -> list[str] | None:
    """Class names from a ``classes.txt`` beside a Zhang-layout file, if it has one per index."""
    beside = path.parent / "classes.txt"
    if not beside.is_file():
        return None
    names = [line.strip() for line in beside.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    try:
        numbers = [int(i) for i in indices]
    except ValueError:
        return None
    if not numbers or min(numbers) < 1 or max(numbers) > len(names):
        return None
    return [names[n - 1] for n in numbers]
