"""Exact cosine nearest neighbours as torch matrix products: normalise, multiply, top-k, chunk by chunk.

Exact search is the default because it needs no index to build, no extra dependency and
no recall to tune, and it is fast enough for the collections deepstrata makes: one query
against 60,000 MNIST embeddings is one [1, D] x [D, 60000] product (see BENCHMARKS.md,
"Compactness and search"). The index is walked in chunks of ``chunk`` rows, so the
score matrix in memory is at most ``queries x chunk`` whatever the collection's size;
each chunk's top-k is merged into the running top-k.
"""

from __future__ import annotations

import numpy as np
import torch

CHUNK_ROWS = 65536


def normalise(vectors) -> torch.Tensor:
    """Rows scaled to length 1 as float32 (an all-zero row stays zero: its cosine with anything is 0)."""
    x = torch.as_tensor(np.asarray(vectors, dtype=np.float32) if not isinstance(vectors, torch.Tensor) else vectors)
    x = x.float()
    if x.dim() == 1:
        x = x.unsqueeze(0)
    return torch.nn.functional.normalize(x, dim=1)


@torch.inference_mode()
def cosine_top_k(index, queries, k: int, *, chunk: int = CHUNK_ROWS,
                 index_is_unit: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``index [N, D]`` nearest to each of ``queries [Q, D]`` by cosine similarity.

    Returns ``(scores [Q, k'], rows [Q, k'])`` with ``k' = min(k, N)``, best first (between chunks, equal
    scores keep the lower row first). ``index_is_unit``: ``index`` is already a ``normalise``d tensor.
    """
    unit = index if index_is_unit else normalise(index)
    q = normalise(queries)
    if q.shape[1] != unit.shape[1]:
        raise ValueError(f"queries have dimension {q.shape[1]}, the index {unit.shape[1]}")
    k = min(int(k), unit.shape[0])
    best_scores = torch.full((q.shape[0], 0), -torch.inf)
    best_rows = torch.zeros((q.shape[0], 0), dtype=torch.int64)
    for start in range(0, unit.shape[0], chunk):
        scores = q @ unit[start:start + chunk].T
        top, rows = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        merged = torch.cat([best_scores, top], dim=1)
        merged_rows = torch.cat([best_rows, rows + start], dim=1)
        # stable: among equal scores the earlier chunk (the lower row) stays ahead
        order = torch.sort(merged, dim=1, descending=True, stable=True).indices[:, :k]
        best_scores, best_rows = merged.gather(1, order), merged_rows.gather(1, order)
    return best_scores.numpy(), best_rows.numpy()
