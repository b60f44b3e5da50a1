"""``embed`` and ``search`` for recommendation runs: one vector per item (the default) or per user.

``--rows items`` (default) writes the learned item table, ``item_embedding``: the vectors
``similar`` ranks by, one row per item, id the item id and label its title when the log
has titles. ``--rows users`` writes one vector per user of the run's log, id the user id
and no label, from ``features`` (the user vector the model scores with: MF's user
embedding, SASRec's last state) or another per-user layer. A search query is then an
item id, or a user id, of the run's log.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepstrata.embeddings import EmbeddedRows
from deepstrata.errors import ConfigError, DataError
from deepstrata.inspect.layer_vectors import FEATURES, layer_vectors

ROWS = ("items", "users")


def _rows(rows: str | None) -> str:
    rows = rows or "items"
    if rows not in ROWS:
        raise ConfigError(f"--rows: got {rows!r}, expected items or users")
    return rows


def _item_layer(layer: str) -> str:
    from deepstrata.families.recommend.inspect import ITEM_TABLE

    if layer not in (FEATURES, ITEM_TABLE):
        raise ConfigError(f"--layer: the rows are items, whose vectors are the item table ({ITEM_TABLE}); "
                          f"layer {layer!r} gives user vectors: add --rows users")
    return ITEM_TABLE


def _check_data(run, data) -> None:
    from deepstrata.families.recommend.serve import served

    if isinstance(data, (str, Path)) and str(data) not in (run.config.data.source, served(run).log.source):
        raise DataError(f"--data {data}: a recommendation run embeds the users and items of its own log "
                        f"({run.config.data.source}); leave --data out")


def user_vectors(run, users, layer: str, batch_size: int = 256) -> np.ndarray:
    from deepstrata.families.recommend.inspect import ITEM_TABLE, user_inputs

    if layer == ITEM_TABLE:
        raise ConfigError(f"--layer: {ITEM_TABLE} is the item table, not one vector per user; use --rows items")
    x, mask = user_inputs(run, users)
    return layer_vectors(run.model, x, layer, mask=mask, batch_size=batch_size)


def embed_source(run, data, layer: str, *, rows=None, column=None, data_dir=None,
                 batch_size: int = 256) -> EmbeddedRows:
    """Every item (or user) of the run's log, or those of a list of ids, with their ids (and item titles)."""
    from deepstrata.families.recommend.inspect import item_table, user_ids
    from deepstrata.families.recommend.serve import served

    rows = _rows(rows)
    if column is not None:
        raise ConfigError(f"--text-column: {run.path} is {run.kind}; only text runs read a text column")
    _check_data(run, data)
    source = f"{served(run).log.source}: every {rows[:-1]} of the run's log" if data is None or isinstance(
        data, (str, Path)) else f"{rows} given"
    if rows == "items":
        vectors, ids = item_table(run, data)
        titles = served(run).log.titles
        return EmbeddedRows(vectors, [str(i) for i in ids], [titles.get(i) for i in ids], _item_layer(layer),
                            rows="items", source=source)
    ids = user_ids(run, data)
    return EmbeddedRows(user_vectors(run, data, layer, batch_size), [str(i) for i in ids], [None] * len(ids),
                        layer, rows="users", source=source)


def embed_query(run, query, layer: str, *, rows: str, batch_size: int = 256) -> np.ndarray:
    """The vector ``[1, D]`` of one item id (``rows`` items) or user id (``rows`` users) of the run's log."""
    from deepstrata.families.recommend.inspect import item_table

    if _rows(rows) == "items":
        _item_layer(layer)
        return item_table(run, [str(query)])[0]
    return user_vectors(run, [str(query)], layer, batch_size)
