"""``embed`` and ``search`` for text runs: one vector per text, with its id and label.

Ids: a ``.txt`` gives its line numbers (from 1, as an editor counts); a table the value
of its ``id`` column when it has one, else the row number (from 0, header not counted);
a folder of class sub-folders ``train/<i>`` and ``test/<i>`` in reading order. Labels:
the table's label column (the one the run was trained on) or the class folder; none for a
``.txt``. Texts are read as ``embed --per-token`` and ``predict --file`` read them
(``read_input_texts``: the run's text column, or ``--text-column``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepstrata.embeddings import EmbeddedRows
from deepstrata.errors import ConfigError
from deepstrata.inspect.layer_vectors import FEATURES, layer_vectors

ID_COLUMNS = ("id", "ID", "Id")


def text_vectors(run, texts: list[str], layer: str, batch_size: int = 256) -> np.ndarray:
    """``[N, D]`` vectors of ``layer`` for texts, tokenized with the run's tokenizer (index and query alike)."""
    from deepstrata.families.text.inspect import text_inputs

    ids, mask = text_inputs(run, texts)
    return layer_vectors(run.model, ids, layer, mask=mask, trim=True, batch_size=batch_size)


def _ids_and_labels(run, path: Path, count: int) -> tuple[list[str], list[str | None]]:
    """A table's row ids (its ``id`` column, else row numbers) and labels (the run's label column, if present)."""
    from deepstrata.data.text import detect_text_format, read_table

    info = run.info.get("text") or {}
    table = read_table(path, detect_text_format(path), encoding=info.get("encoding") or "utf-8")
    if len(table.rows) != count:  # read_input_texts read this same table: one text per row
        raise ConfigError(f"{path}: {len(table.rows)} rows for {count} texts")
    id_column = next((c for c in ID_COLUMNS if c in table.columns), None)
    ids = ([str(row[table.column(id_column)]) for row in table.rows] if id_column
           else [str(i) for i in range(len(table.rows))])
    label_column = info.get("label_column")
    if label_column in table.columns:
        labels = [row[table.column(label_column)] for row in table.rows]
    else:
        labels = [None] * len(table.rows)
    return ids, labels


def read_rows(run, source: str, column: str | None) -> tuple[list[str], list[str], list[str | None], str]:
    """Texts of ``source`` with one id and label each, and a description of what was read."""
    from deepstrata.data.text import detect_text_format, load_text
    from deepstrata.families.text.verbs import read_input_texts

    path = Path(source).expanduser()
    if path.exists() and (path.is_dir() or detect_text_format(path) == "folder"):
        info = run.info.get("text") or {}
        dataset = load_text(path, format="folder", encoding=info.get("encoding") or "utf-8")
        texts = list(dataset.texts) + list(dataset.test_texts or [])
        labels = [dataset.classes[int(y)] for y in dataset.labels.tolist()]
        if dataset.test_texts is not None:
            labels += [dataset.classes[int(y)] for y in dataset.test_labels.tolist()]
            ids = [f"train/{i}" for i in range(len(dataset.texts))] + [f"test/{i}" for i in range(len(dataset.test_texts))]
        else:
            ids = [str(i) for i in range(len(texts))]
        return texts, ids, labels, f"{source}: {len(texts)} texts"
    texts = read_input_texts(source, run, column)
    if path.name.lower().endswith(".txt"):
        return texts, [str(i + 1) for i in range(len(texts))], [None] * len(texts), f"{source}: {len(texts)} lines"
    ids, labels = _ids_and_labels(run, path, len(texts))
    return texts, ids, labels, f"{source}: {len(texts)} rows"


def embed_source(run, data, layer: str, *, rows=None, column=None, data_dir=None,
                 batch_size: int = 256) -> EmbeddedRows:
    """Every text of ``data`` (a file or folder; default the run's own source; or a list of texts) at ``layer``."""
    from deepstrata.families.text.verbs import as_texts, embed_texts

    if rows not in (None, "examples"):
        raise ConfigError(f"--rows: {run.path} is {run.kind}; its rows are its texts (users and items are rows of "
                          "a recommendation run)")
    if data is not None and not isinstance(data, (str, Path)):
        texts = as_texts(data)
        # a list of texts at the default layer: exactly what run.embed(texts) always returned
        vectors = embed_texts(run, texts) if layer == FEATURES else text_vectors(run, texts, layer, batch_size)
        return EmbeddedRows(vectors, [str(i) for i in range(len(texts))], [None] * len(texts), layer, source="texts")
    source = str(data) if data is not None else run.config.data.source
    if data is not None:
        run.family.check_source(run, source, "embed")
    texts, ids, labels, description = read_rows(run, source, column)
    return EmbeddedRows(text_vectors(run, texts, layer, batch_size), ids, labels, layer, source=description)


def embed_query(run, query, layer: str, *, rows: str, batch_size: int = 256) -> np.ndarray:
    """The vector ``[1, D]`` of one text (the query string itself, never a file name)."""
    from deepstrata.errors import DataError

    if not isinstance(query, str):
        raise DataError(f"--query: expected a text, got {type(query).__name__}")
    return text_vectors(run, [query], layer, batch_size)
