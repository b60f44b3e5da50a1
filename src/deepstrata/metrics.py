"""Classification metrics in plain numpy.

Learned models and classical baselines are scored by the same few functions so that
a comparison table never mixes two definitions of "accuracy". The definitions match
scikit-learn's (``f1_score(average="macro", labels=range(num_classes), zero_division=0)``),
but nothing here imports scikit-learn: the training loop calls these every epoch and
should not pay for, or thread-fight with, sklearn's BLAS.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepstrata.errors import DataError


def _as_labels(y: Any, what: str) -> np.ndarray:
    """Turn a list, numpy array or torch tensor of class indices into a 1-D int64 array."""
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise DataError(f"{what}: expected a 1-D array of class indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise DataError(f"{what}: expected integer class indices, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _as_labels(y_true, "y_true")
    p = _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise DataError(f"y_true has {t.size} labels but y_pred has {p.size}")
    if t.size == 0:
        raise DataError("cannot score an empty set of predictions")
    return t, p


def _check_range(y: np.ndarray, num_classes: int, what: str) -> None:
    if num_classes < 1:
        raise DataError(f"num_classes must be at least 1, got {num_classes}")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(f"{what}: class index out of range [0, {num_classes}): found {lo if lo < 0 else hi}")


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of positions where ``y_pred == y_true``; both shaped [N]."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """Counts shaped [num_classes, num_classes]: rows are true classes, columns predicted; int64.

    Classes absent from both arrays still get a (zero) row and column, so matrices from
    different splits or models line up.
    """
    t, p = _pair(y_true, y_pred)
    _check_range(t, num_classes, "y_true")
    _check_range(p, num_classes, "y_pred")
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def per_class_f1(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """F1 of each class, shaped [num_classes]; 0 where a class is never true nor predicted."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def macro_f1(y_true: Any, y_pred: Any, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over all ``num_classes`` classes.

    Averaging over every class, not only those present, punishes a model that never
    predicts a rare class — which is the point of reporting macro F1 beside accuracy.
    """
    return float(per_class_f1(y_true, y_pred, num_classes).mean())


def classification_metrics(y_true: Any, y_pred: Any, num_classes: int) -> dict[str, float]:
    """The metrics every classifier row of a comparison reports: ``{"accuracy", "macro_f1"}``."""
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, num_classes),
    }
