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
"""

from __future__ import annotations

import csv
import io
import json
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deepstrata.data import tables
from deepstrata.errors import DataError

FORMATS = ("csv", "tsv", "jsonl", "parquet", "fasttext", "folder")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")
TEXT_NAMES = ("text", "review", "sentence", "content", "body", "document", "comment", "message", "tweet",
              "utterance", "question", "abstract")
LABEL_NAMES = ("label", "labels", "sentiment", "class", "category", "target", "topic", "polarity", "intent",
               "y", "stars", "rating")
UNLABELLED_FOLDERS = ("unsup", "unlabeled", "unlabelled")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_ZHANG_ENTITY = re.compile(r" ?#(\d{2,5});")
_FASTTEXT = re.compile(r"__label__(\S+)\s?")
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


@dataclass
class TextSplits:
    """Three disjoint parts of a ``TextDataset`` (the same split ``split_dataset`` gives images)."""

    train_texts: list[str]
    train_y: np.ndarray
    val_texts: list[str]
    val_y: np.ndarray
    test_texts: list[str]
    test_y: np.ndarray
    classes: list[str]
    test_is_official: bool


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
        ds = _labelled(table, text_column, label_column)
    if max_per_class is not None and fmt != "folder":
        ds = _cap_per_class(ds, max_per_class)
    ds.source, ds.format, ds.encoding = str(source), fmt, encoding
    _check_classes(ds, path)
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


def split_text(ds: TextDataset, *, seed: int, val_fraction: float = 0.1, test_fraction: float = 0.2) -> TextSplits:
    """The deterministic stratified split of ``data.split.split_dataset``, applied to strings.

    Row indices stand in for the examples, so texts and images are split by one function.
    """
    from deepstrata.data.split import split_dataset

    _check_classes(ds, ds.source or "<in-memory texts>")  # a TextDataset built in code is checked here
    official = ds.test_texts is not None and ds.test_labels is not None

    @dataclass
    class _Indexed:
        x: torch.Tensor
        y: torch.Tensor
        classes: list[str]
        test_x: torch.Tensor | None
        test_y: torch.Tensor | None

    indexed = _Indexed(
        x=torch.arange(len(ds.texts)), y=torch.from_numpy(np.asarray(ds.labels, dtype=np.int64)), classes=ds.classes,
        test_x=torch.arange(len(ds.test_texts)) if official else None,
        test_y=torch.from_numpy(np.asarray(ds.test_labels, dtype=np.int64)) if official else None,
    )
    parts = split_dataset(indexed, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    test_source = ds.test_texts if official else ds.texts
    return TextSplits(
        train_texts=[ds.texts[i] for i in parts.train_x.tolist()], train_y=parts.train_y.numpy(),
        val_texts=[ds.texts[i] for i in parts.val_x.tolist()], val_y=parts.val_y.numpy(),
        test_texts=[test_source[i] for i in parts.test_x.tolist()], test_y=parts.test_y.numpy(),
        classes=list(ds.classes), test_is_official=official,
    )


# --- decoding -----------------------------------------------------------------------------

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


# --- tables -------------------------------------------------------------------------------

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


def _is_number(value: str) -> bool:
    return bool(_NUMBER.fullmatch(value.strip()))


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
    header = not any(_is_number(cell) for cell in first)
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


def _cell(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


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
    rows = [[_cell(record.get(name)) for name in columns] for _, record in records]
    lines = [number if number else index + 1 for index, (number, _) in enumerate(records)]
    return Table(path=path, columns=columns, rows=rows, lines=lines)


def _read_parquet(path: Path) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow; install it with pip install 'deepstrata[text]'") from None
    try:
        data = pq.read_table(path).to_pydict()
    except Exception as err:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
    columns = list(data)
    count = len(next(iter(data.values()))) if columns else 0
    if not count:
        raise DataError(f"{path}: empty file; expected rows of text")
    rows = [[_cell(data[name][i]) for name in columns] for i in range(count)]
    return Table(path=path, columns=columns, rows=rows, lines=list(range(1, count + 1)))


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


def _labelled(table: Table, text_column: str | None, label_column: str | None) -> TextDataset:
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
    classes = sorted(set(raw_labels), key=_natural)
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


def _natural(value: str) -> tuple:
    """Sort key that puts "2" before "10" and keeps strings in alphabetical order."""
    if _is_number(value):
        return (0, float(value), value)
    return (1, 0.0, tuple(int(p) if p.isdigit() else p.lower() for p in _NATURAL.split(value)))


def _check_classes(ds: TextDataset, path: Path | str) -> None:
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


def _cap_per_class(ds: TextDataset, limit: int) -> TextDataset:
    keep: list[int] = []
    counts: dict[int, int] = {}
    for i, y in enumerate(ds.labels.tolist()):
        if counts.get(y, 0) < limit:
            counts[y] = counts.get(y, 0) + 1
            keep.append(i)
    ds.texts = [ds.texts[i] for i in keep]
    ds.labels = ds.labels[keep]
    return ds


# --- fastText ------------------------------------------------------------------------------

def read_fasttext(path: str | Path, *, encoding: str = "utf-8") -> TextDataset:
    """Lines ``__label__<class> text`` (the first label of a line is used)."""
    path = Path(path)
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path}: empty file; expected lines '__label__<class> <text>'")
    text = decode_bytes(data, encoding, path)
    texts: list[str] = []
    raw: list[str] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        match = _FASTTEXT.match(line)
        if match is None:
            raise DataError(f"{path}: line {number}: expected '__label__<class> <text>' (fastText form); a .txt of "
                            f"plain lines is for predict and embed, not for training")
        raw.append(match.group(1))
        texts.append(_FASTTEXT.sub("", line.rstrip("\r")).strip())
    classes = sorted(set(raw), key=_natural)
    lookup = {name: i for i, name in enumerate(classes)}
    return TextDataset(texts=texts, labels=np.array([lookup[v] for v in raw], dtype=np.int64), classes=classes)


# --- folders and archives -------------------------------------------------------------------

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
    docs.sort(key=lambda d: (d.split != "train", d.split or "", _natural(d.label), _natural(d.name)))
    train_docs = [d for d in docs if d.split in (None, "train")]
    test_docs = [d for d in docs if d.split == "test"]
    if split_docs and not train_docs:
        raise DataError(f"{path}: a test/ folder but no train/ folder of class sub-folders")
    classes = sorted({d.label for d in train_docs}, key=_natural)
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
    for file in sorted(root.rglob("*.txt"), key=lambda p: tuple(_natural(part) for part in p.parts)):
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
