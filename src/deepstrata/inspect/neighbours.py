"""Nearest neighbours in a learned space, as a table the report can show.

Used for the tokens nearest to a chosen token in each block of a text model, and for the
items nearest to a few items in a recommender's item space. Similarity is cosine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class NeighbourTable:
    """``rows[r][c]`` is the ``r``-th neighbour in column ``c``, as (label, detail) text.

    ``title`` heads the table, ``query`` says what the neighbours are of, ``section``
    names the report section it belongs to.
    """

    section: str
    title: str
    query: str
    columns: list[str]
    rows: list[list[tuple[str, str]]]
    note: str = ""
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"title": self.title, "query": self.query, "columns": self.columns,
                "rows": [[{"label": a, "detail": b} for a, b in row] for row in self.rows]}


def cosine_neighbours(vectors: np.ndarray, query: int, k: int, exclude: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine similarities of the ``k`` rows nearest to row ``query`` (itself and ``exclude`` left out)."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    scores = x @ x[query]
    scores[query] = -np.inf
    if exclude is not None:
        scores[exclude] = -np.inf
    k = min(k, int(np.isfinite(scores).sum()))
    order = np.argsort(-scores, kind="stable")[:k]
    return order, scores[order]


def columns_to_rows(columns: list[list[tuple[str, str]]]) -> list[list[tuple[str, str]]]:
    """Transpose per-column neighbour lists (possibly of unequal length) into table rows."""
    depth = max((len(c) for c in columns), default=0)
    return [[c[r] if r < len(c) else ("", "") for c in columns] for r in range(depth)]
