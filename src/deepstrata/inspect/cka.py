"""Linear centred kernel alignment (CKA; Kornblith, Norouzi, Lee and Hinton, ICML 2019).

CKA says how similar two layers' representations of the same examples are, as a number
in [0, 1] that does not change under an orthogonal transform or an isotropic scaling of
either representation, so layers of different widths can be compared. With linear
kernels it is::

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F * ||Yc^T Yc||_F)

for column-centred ``Xc``, ``Yc`` (examples in rows). Computed from the n x n Gram
matrices instead, its cost does not grow with the width of a layer, which matters for
flattened convolution maps with thousands of values per example.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def _as_matrix(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two representations ``[n, p]`` and ``[n, q]`` of the same n examples.

    Returns NaN when either representation is constant over the examples (undefined).
    """
    x, y = _as_matrix(x), _as_matrix(y)
    if len(x) != len(y):
        raise ValueError(f"CKA needs the same examples in both: got {len(x)} and {len(y)} rows")
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    cross = np.linalg.norm(y.T @ x) ** 2
    norm = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / norm) if norm > 0 else float("nan")


def gram_linear(x: np.ndarray) -> np.ndarray:
    """The linear-kernel Gram matrix ``X X^T`` ``[n, n]`` of a representation ``[n, ...]``."""
    x = _as_matrix(x)
    return x @ x.T


def center_gram(k: np.ndarray) -> np.ndarray:
    """``H K H`` with ``H = I - 11^T / n`` (double centring), without forming ``H``."""
    k = np.asarray(k, dtype=np.float64)
    return k - k.mean(0, keepdims=True) - k.mean(1, keepdims=True) + k.mean()


def cka_from_grams(k: np.ndarray, l: np.ndarray) -> float:
    """CKA from two Gram matrices (centred here): HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
    kc, lc = center_gram(k), center_gram(l)
    norm = np.sqrt(np.sum(kc * kc) * np.sum(lc * lc))
    return float(np.sum(kc * lc) / norm) if norm > 0 else float("nan")


def cka_matrix(features: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Pairwise CKA between every two layers: names in the given order and a symmetric ``[L, L]`` matrix."""
    names = list(features)
    grams = [center_gram(gram_linear(features[name])) for name in names]
    norms = [np.sqrt(np.sum(g * g)) for g in grams]
    matrix = np.eye(len(names))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            denom = norms[i] * norms[j]
            value = float(np.sum(grams[i] * grams[j]) / denom) if denom > 0 else float("nan")
            matrix[i, j] = matrix[j, i] = value
        if norms[i] == 0:
            matrix[i, i] = float("nan")
    return names, matrix


def paired_cka(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> dict[str, float]:
    """CKA between the same layer of two models (e.g. trained vs its random initialisation)."""
    return {name: cka_from_grams(gram_linear(a[name]), gram_linear(b[name])) for name in a if name in b}
