"""Item-kNN on co-occurrence: the classic hand-made item feature (Sarwar et al. 2001).

Two items are similar when the same users interacted with both: the cosine of their
binary user columns. Each item keeps its ``k`` most similar neighbours, and a user's
score for an item sums its similarity to the items in their history. The neighbourhood
size is tuned on the validation split, as the reproducibility studies insist baselines
must be (Dacrema et al., RecSys 2019).

Similarities are built in blocks of items so a large catalogue never needs its full
item × item matrix at once.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def user_item_matrix(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int) -> sp.csr_matrix:
    data = np.ones(len(users), dtype=np.float32)
    matrix = sp.csr_matrix((data, (users, items)), shape=(num_users, num_items))
    matrix.data[:] = 1.0
    return matrix


def cosine_neighbours(matrix: sp.csr_matrix, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For every item, its ``k`` most similar other items and their cosines, best first.

    Returns ``(indices, values)``, each [num_items, k'] with k' = min(k, num_items - 1).
    """
    num_items = matrix.shape[1]
    k = max(1, min(k, num_items - 1))
    columns = matrix.T.tocsr().astype(np.float32)
    norms = np.sqrt(np.asarray(columns.multiply(columns).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    indices = np.zeros((num_items, k), dtype=np.int64)
    values = np.zeros((num_items, k), dtype=np.float32)
    for start in range(0, num_items, block):
        stop = min(start + block, num_items)
        sims = (columns[start:stop] @ columns.T).toarray()
        sims /= norms[start:stop, None] * norms[None, :]
        sims[np.arange(stop - start), np.arange(start, stop)] = 0.0
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_values = np.take_along_axis(sims, top, axis=1)
        order = np.lexsort((top, -top_values), axis=1)
        indices[start:stop] = np.take_along_axis(top, order, axis=1)
        values[start:stop] = np.take_along_axis(top_values, order, axis=1)
    return indices, values


class ItemKNN:
    """Scores ``history @ S`` where ``S`` keeps each item's ``k`` nearest neighbours."""

    name = "itemknn"

    def __init__(self, train_users: np.ndarray, train_items: np.ndarray, num_users: int, num_items: int,
                 *, max_k: int = 400) -> None:
        self.num_items = num_items
        matrix = user_item_matrix(train_users, train_items, num_users, num_items)
        self.neighbour_index, self.neighbour_value = cosine_neighbours(matrix, max_k)
        self.k = self.neighbour_index.shape[1]
        self._similarity = self._build(self.k)

    def _build(self, k: int) -> sp.csr_matrix:
        k = min(k, self.neighbour_index.shape[1])
        rows = np.repeat(np.arange(self.num_items), k)
        return sp.csr_matrix(
            (self.neighbour_value[:, :k].ravel(), (rows, self.neighbour_index[:, :k].ravel())),
            shape=(self.num_items, self.num_items),
        )

    def set_k(self, k: int) -> None:
        """Use each item's ``k`` nearest neighbours (at most the ``max_k`` computed)."""
        self.k = min(k, self.neighbour_index.shape[1])
        self._similarity = self._build(self.k)

    def scores(self, users: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor:
        """[B, num_items]: summed similarity of each item to the user's history."""
        rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
        cols = np.concatenate(histories) if histories else np.zeros(0, dtype=np.int64)
        history = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)),
                                shape=(len(histories), self.num_items))
        return torch.from_numpy(np.asarray((history @ self._similarity).todense(), dtype=np.float32))

    def settings(self) -> dict:
        return {"neighbours": int(self.k)}
