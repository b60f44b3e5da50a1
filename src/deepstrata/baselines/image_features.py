"""Hand-engineered image features and the linear classifiers deep learning is measured against.

Two baselines, both fitted on the same train/val/test split as the learned models:

* ``hog_lr``: histograms of oriented gradients (Dalal & Triggs 2005) plus an intensity
  histogram, then a standardised multinomial logistic regression. This is the classical
  "engineer the features, learn a linear map" pipeline that convolutional nets replaced.
* ``pixels_lr``: the same classifier on raw pixels, to show how much the features help.

Thread discipline: scikit-learn's BLAS and OpenMP pools, left at full size, were seen to
make torch training in the same process 7-35x slower afterwards on a 2-core machine
(idle pools keep spinning and fight torch's own threads). Every fit and predict here
therefore runs inside ``threadpool_limits(limits=SKLEARN_THREADS)``, which restores the
previous limits on exit, so nothing leaks into the caller's torch session.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from deepstrata.errors import ConfigError, DataError
from deepstrata.metrics import accuracy, classification_metrics
from deepstrata.split_rule import RULE

BASELINES = ("hog_lr", "pixels_lr")

SKLEARN_THREADS = 1
"""Thread limit for every scikit-learn call; 1 keeps BLAS/OpenMP pools from competing with torch."""

C_GRID = (0.01, 0.1, 1.0, 10.0)
"""Inverse regularisation strengths tried on the validation split, smallest first."""

SEARCH_MAX_TRAIN = 10_000
"""The C search fits on at most this many training rows; the final refit uses all of them."""

MAX_ITER = 200
"""lbfgs iteration cap; bounds cost on MNIST-size data. Whether each fit converged is recorded."""

CV_FOLDS = 3
"""Folds of the stratified cross-validation that chooses C when there is no validation split."""

DEFAULT_C = 1.0
"""C when it cannot be chosen at all (no validation split, a class with one training example): scikit-learn's."""

HIST_BINS = 16
"""Bins of the per-channel intensity histogram appended to the HOG descriptor."""

HOG_ORIENTATIONS = 9
HOG_CELLS_PER_SIDE = 4
HOG_CELLS_PER_BLOCK = 2

_LUMA = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)


def _as_images(x: Any, what: str = "images") -> np.ndarray:
    """Check and return ``x`` as a uint8 numpy array shaped [N, C, H, W] with C in {1, 3}."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 4:
        raise DataError(f"{what}: expected a [N, C, H, W] array, got shape {arr.shape}")
    if arr.shape[1] not in (1, 3):
        raise DataError(f"{what}: expected 1 (gray) or 3 (RGB) channels, got {arr.shape[1]}")
    if arr.dtype != np.uint8:
        raise DataError(f"{what}: expected uint8 pixels in 0..255, got dtype {arr.dtype}")
    return arr


def _to_gray(x: np.ndarray) -> np.ndarray:
    """[N, C, H, W] uint8 -> [N, H, W] float32 in [0, 1], RGB mixed with ITU-R 709 luma weights."""
    if x.shape[1] == 1:
        return x[:, 0].astype(np.float32) / 255.0
    return np.tensordot(_LUMA, x.astype(np.float32), axes=([0], [1])) / 255.0


def hog_cell_size(height: int, width: int) -> int:
    """Pixels per (square) HOG cell: the image becomes a 4x4 grid of cells.

    That gives 2 px cells on 8x8 digits, 7 px on 28x28 MNIST and 8 px on 32x32 CIFAR —
    coarse enough to stay fast (0.1 ms per 28x28 image batched, ``hog_descriptors``) and fine
    enough to keep stroke layout. Finer cells cost 3-4x the time for about a point of accuracy.
    """
    side = min(height, width)
    if side < 2 * HOG_CELLS_PER_BLOCK:
        raise DataError(f"images of {height}x{width} px are too small for HOG (need at least 4x4)")
    return max(1, side // HOG_CELLS_PER_SIDE)


def intensity_histogram(x: Any, bins: int = HIST_BINS) -> np.ndarray:
    """Per-channel histograms of pixel values, as fractions of the image: [N, C*bins] float32."""
    arr = _as_images(x)
    n, c = arr.shape[:2]
    idx = (arr.reshape(n, c, arr.shape[2] * arr.shape[3]).astype(np.int64) * bins) >> 8  # n may be 0
    offsets = (np.arange(n * c, dtype=np.int64) * bins).reshape(n, c, 1)
    counts = np.bincount((idx + offsets).ravel(), minlength=n * c * bins)
    per_pixel = 1.0 / (arr.shape[2] * arr.shape[3])
    return (counts.reshape(n, c * bins) * per_pixel).astype(np.float32)


HOG_CHUNK_PIXELS = 2048 * 32 * 32
"""Pixels per vectorised HOG pass (2,048 images of 32x32, 32 of 256x256): its temporaries take about
56 bytes a pixel, so a pass holds ~120 MB whatever the image size."""

_HOG_EPS = 1e-5


def hog_descriptors(gray: np.ndarray, cell: int, orientations: int = HOG_ORIENTATIONS,
                    block: int = HOG_CELLS_PER_BLOCK) -> np.ndarray:
    """``skimage.feature.hog(image, orientations, (cell, cell), (block, block), "L2-Hys")`` of each [N, H, W] image.

    The same numbers, bit for bit (``tests/baselines/test_hog.py`` holds it to scikit-image), for
    a batch at once: scikit-image is called once per image, and on 8x8 digits that Python loop
    was most of the baseline's feature time (0.53 s for the 1,797 digits, 0.035 s here;
    ``benchmarks/fit_fixed_costs.py``). What has to match scikit-image's Cython exactly:
    central differences in the image's float32, magnitude and orientation (``atan2`` in
    degrees, modulo 180) in float64, a pixel votes into bin ``i`` when ``edge_i <= angle <
    edge_i+1`` (the edges float32 multiples of 180 / orientations, so an angle that rounds to
    180 votes nowhere), cell sums accumulated in float32 in row-major pixel order and divided
    by the cell's area in float32, then each block L2-normalised, clipped at 0.2 and
    normalised again in float64 (its sums in the order NumPy sums a 36-value block).
    Rows and columns past the last whole cell are ignored, as there.
    """
    n, height, width = gray.shape
    rows, cols = height // cell, width // cell
    per_bin = np.float32(180.0 / orientations)
    edges = np.array([np.float32(per_bin * np.float32(i)) for i in range(orientations + 1)], dtype=np.float64)
    out = np.empty((n, (rows - block + 1) * (cols - block + 1) * block * block * orientations), np.float32)
    chunk = max(1, HOG_CHUNK_PIXELS // max(height * width, 1))
    for begin in range(0, n, chunk):
        images = gray[begin:begin + chunk]
        g_row = np.zeros_like(images)
        g_row[:, 1:-1, :] = images[:, 2:, :] - images[:, :-2, :]
        g_col = np.zeros_like(images)
        g_col[:, :, 1:-1] = images[:, :, 2:] - images[:, :, :-2]
        g_row = g_row[:, :rows * cell, :cols * cell].astype(np.float64)
        g_col = g_col[:, :rows * cell, :cols * cell].astype(np.float64)
        magnitude = np.hypot(g_col, g_row)
        angle = np.rad2deg(np.arctan2(g_row, g_col)) % 180
        votes = np.searchsorted(edges, angle, side="right") - 1
        magnitude[angle >= edges[-1]] = 0.0  # scikit-image drops a pixel whose angle is not below the last edge
        votes = np.minimum(votes, orientations - 1)
        # [n, rows, cell, cols, cell] -> [cell, cell, n * rows * cols]: at each pixel offset every cell gets one
        # vote, into its own slot of the histogram, so the float32 running sums advance one offset at a time.
        shape = (len(images), rows, cell, cols, cell)
        magnitude = magnitude.reshape(shape).transpose(2, 4, 0, 1, 3).reshape(cell, cell, -1)
        slots = votes.reshape(shape).transpose(2, 4, 0, 1, 3).reshape(cell, cell, -1)
        slots = slots + np.arange(slots.shape[-1]) * orientations
        hist = np.zeros(len(images) * rows * cols * orientations, np.float32)
        for dy in range(cell):
            for dx in range(cell):
                at = slots[dy, dx]
                hist[at] = hist[at] + magnitude[dy, dx]  # float64 sum, rounded to float32 as scikit-image's C does
        hist = hist.reshape(len(images), rows, cols, orientations)
        hist = (hist / np.float32(cell * cell)).astype(np.float64)
        blocks = np.stack([hist[:, r:r + block, c:c + block, :].reshape(len(images), -1)
                           for r in range(rows - block + 1) for c in range(cols - block + 1)], axis=1)
        blocks = blocks / np.sqrt(np.sum(blocks ** 2, axis=-1, keepdims=True) + _HOG_EPS ** 2)
        blocks = np.minimum(blocks, 0.2)
        blocks = blocks / np.sqrt(np.sum(blocks ** 2, axis=-1, keepdims=True) + _HOG_EPS ** 2)
        out[begin:begin + chunk] = blocks.reshape(len(images), -1)
    return out


def hog_features(x: Any) -> np.ndarray:
    """HOG of the gray image plus a per-channel intensity histogram: [N, D] float32.

    ``x`` is uint8 [N, C, H, W] (numpy or torch). D = 324 + 16*C for the default 4x4-cell
    grid with 2x2-cell blocks and 9 orientations; the histogram restores the colour and
    brightness information that gray, block-normalised gradients throw away.
    """
    arr = _as_images(x)
    cell = hog_cell_size(arr.shape[2], arr.shape[3])
    return np.concatenate([hog_descriptors(_to_gray(arr), cell), intensity_histogram(arr)], axis=1)


def pixel_features(x: Any) -> np.ndarray:
    """Raw pixels flattened and scaled to [0, 1]: [N, C*H*W] float32."""
    arr = _as_images(x)
    return arr.reshape(arr.shape[0], int(np.prod(arr.shape[1:]))).astype(np.float32) / 255.0


_FEATURES: dict[str, Callable[[Any], np.ndarray]] = {
    "hog_lr": hog_features,
    "pixels_lr": pixel_features,
}


@dataclass
class BaselineResult:
    """One fitted baseline, scored on the test split.

    ``train_seconds`` covers feature extraction of train and val, the C search and the
    final fit — everything a user waits for before the model can predict.
    """

    name: str
    kind: str
    metrics: dict[str, float]
    train_seconds: float
    feature_dim: int
    params: int
    predictions: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The JSON-ready row for comparison.json; ``extra`` goes under ``"settings"``."""
        return {
            "name": self.name,
            "kind": self.kind,
            "metrics": {k: float(v) for k, v in self.metrics.items()},
            "train_seconds": float(self.train_seconds),
            "feature_dim": int(self.feature_dim),
            "params": int(self.params),
            "settings": dict(self.extra),
        }


def _labels(y: Any, n: int, num_classes: int, what: str) -> np.ndarray:
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y).astype(np.int64).reshape(-1)
    if arr.size != n:
        raise DataError(f"{what}: {arr.size} labels for {n} images")
    if n and (arr.min() < 0 or arr.max() >= num_classes):
        raise DataError(f"{what}: labels must lie in [0, {num_classes}), found {arr.min()}..{arr.max()}")
    return arr


def _subsample(n: int, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ``limit`` rows, drawn without replacement (all rows if under)."""
    if limit is None or n <= limit:
        return np.arange(n)
    return np.sort(rng.choice(n, size=limit, replace=False))


def choose_c(
    grid: Sequence[float], train_y: np.ndarray, val_y: np.ndarray, seed: int,
    score: Callable[[np.ndarray, np.ndarray, float], float], say: Callable[[str], None], name: str,
) -> tuple[float, dict[str, Any]]:
    """The regularisation ``C`` from ``grid``, and the settings that say how it was chosen.

    With a validation split, ``score(None, None, c)`` is its accuracy for ``c``. Without one
    (a few labelled examples per class: every class kept its examples for training), C is
    chosen by stratified ``k``-fold cross-validation on the training split, ``k`` =
    ``min(CV_FOLDS, smallest class)``, and ``score(fit_idx, held_idx, c)`` is a fold's
    accuracy; when a class has a single training example no fold can hold it out, and C is
    the fixed ``DEFAULT_C``. The test split is never used.
    """
    if len(val_y):
        scores = {}
        for c in grid:
            scores[repr(c)] = score(None, None, c)
            say(f"{name}: C={c:g} val accuracy {scores[repr(c)]:.4f}")
        best = grid[int(np.argmax([scores[repr(c)] for c in grid]))]
        return best, {"C_selection": f"chosen on the validation split ({len(val_y)} examples)",
                      "val_accuracy_by_C": scores}
    present = np.bincount(train_y)
    smallest = int(present[present > 0].min())
    if smallest < 2:
        say(f"{name}: no validation split and a class with one training example: fixed C={DEFAULT_C:g}")
        return DEFAULT_C, {"C_selection": f"fixed default C={DEFAULT_C:g} (scikit-learn's): the validation split "
                                          "is empty and a class has a single training example, so C cannot be "
                                          "chosen by cross-validation", "split_rule": RULE}
    from sklearn.model_selection import StratifiedKFold

    folds = min(CV_FOLDS, smallest)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    parts = list(splitter.split(np.zeros((len(train_y), 1)), train_y))
    scores = {}
    for c in grid:
        scores[repr(c)] = float(np.mean([score(fit_idx, held_idx, c) for fit_idx, held_idx in parts]))
        say(f"{name}: C={c:g} {folds}-fold cross-validated accuracy {scores[repr(c)]:.4f}")
    best = grid[int(np.argmax([scores[repr(c)] for c in grid]))]
    return best, {"C_selection": f"chosen by {folds}-fold stratified cross-validation on the training split "
                                 "(the validation split is empty)", "cv_folds": folds, "cv_accuracy_by_C": scores,
                  "split_rule": RULE}


def _fit_lr(features: np.ndarray, y: np.ndarray, c: float, seed: int) -> tuple[Any, Any, bool]:
    """Standardise then fit a multinomial logistic regression; returns (scaler, model, converged)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    with threadpool_limits(limits=SKLEARN_THREADS), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scaler = StandardScaler().fit(features)
        model = LogisticRegression(C=c, solver="lbfgs", max_iter=MAX_ITER, random_state=seed)
        model.fit(scaler.transform(features), y)
    converged = bool(np.all(np.asarray(model.n_iter_) < MAX_ITER))
    return scaler, model, converged


def _predict(scaler: Any, model: Any, features: np.ndarray) -> np.ndarray:
    with threadpool_limits(limits=SKLEARN_THREADS):
        return model.predict(scaler.transform(features)).astype(np.int64)


def _run_one(
    name: str,
    data: dict[str, tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    seed: int,
    say: Callable[[str], None],
) -> BaselineResult:
    """Extract features, pick C (on val; without one by cross-validation on train), refit on train, score on test."""
    featurize = _FEATURES[name]
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = data["train"], data["val"], data["test"]

    import sklearn.linear_model  # noqa: F401 - its one-time import (1-2 s) is not this baseline's training time
    import sklearn.preprocessing  # noqa: F401

    start = time.perf_counter()
    say(f"{name}: features for {len(train_x)} train + {len(val_x)} val images")
    f_train, f_val = featurize(train_x), featurize(val_x)

    rng = np.random.default_rng(seed)
    search_idx = _subsample(len(f_train), SEARCH_MAX_TRAIN, rng)
    f_search, y_search = f_train[search_idx], train_y[search_idx]

    def score(fit_idx: np.ndarray | None, held_idx: np.ndarray | None, c: float) -> float:
        if fit_idx is None:
            scaler, model, _ = _fit_lr(f_search, y_search, c, seed)
            return accuracy(val_y, _predict(scaler, model, f_val))
        scaler, model, _ = _fit_lr(f_search[fit_idx], y_search[fit_idx], c, seed)
        return accuracy(y_search[held_idx], _predict(scaler, model, f_search[held_idx]))

    best_c, selection = choose_c(C_GRID, y_search, val_y, seed, score, say, name)

    scaler, model, converged = _fit_lr(f_train, train_y, best_c, seed)
    train_seconds = time.perf_counter() - start

    t0 = time.perf_counter()
    predictions = _predict(scaler, model, featurize(test_x))
    predict_seconds = time.perf_counter() - t0
    say(f"{name}: C={best_c:g}, {train_seconds:.1f}s")

    return BaselineResult(
        name=name,
        kind="baseline",
        metrics=classification_metrics(test_y, predictions, num_classes),
        train_seconds=train_seconds,
        feature_dim=int(f_train.shape[1]),
        params=int(model.coef_.size + model.intercept_.size),
        predictions=predictions,
        extra={
            "C": best_c,
            "C_grid": list(C_GRID),
            **selection,
            "search_train_size": int(search_idx.size),
            "train_size": int(len(f_train)),
            "max_iter": MAX_ITER,
            "converged": converged,
            "predict_seconds": round(predict_seconds, 4),
            "sklearn_threads": SKLEARN_THREADS,
        },
    )


def run_image_baselines(
    train_x: Any,
    train_y: Any,
    val_x: Any,
    val_y: Any,
    test_x: Any,
    test_y: Any,
    num_classes: int,
    *,
    names: Sequence[str] = BASELINES,
    seed: int = 0,
    max_train: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[BaselineResult]:
    """Fit each named baseline on train, choose C on val, and score it on test.

    An empty validation split (few examples per class) is allowed: C is then chosen by
    cross-validation on train, or fixed when a class has one training example (``choose_c``);
    the row's settings say which (``C_selection``).

    Images are uint8 [N, C, H, W], labels int [N]. The test split is touched only for the
    final metrics and predictions. ``max_train`` caps the training rows (a seeded random
    subset); independently, the C search fits on at most ``SEARCH_MAX_TRAIN`` rows, which
    keeps MNIST-size data to a couple of minutes on 2 cores. ``progress`` receives one-line
    status messages. Deterministic for a given ``seed``.
    """
    unknown = [n for n in names if n not in _FEATURES]
    if unknown:
        raise ConfigError(f"unknown baseline {unknown[0]!r}; expected one of {', '.join(BASELINES)}")
    if num_classes < 2:
        raise DataError(f"a classifier needs at least 2 classes, got num_classes={num_classes}")
    if max_train is not None and max_train < num_classes:
        raise ConfigError(f"max_train must be at least num_classes ({num_classes}), got {max_train}")

    data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, x, y in (("train", train_x, train_y), ("val", val_x, val_y), ("test", test_x, test_y)):
        images = _as_images(x, f"{split} images")
        if len(images) == 0 and split != "val":  # no val split: C is chosen by cross-validation (choose_c)
            raise DataError(f"the {split} split is empty")
        data[split] = (images, _labels(y, len(images), num_classes, f"{split} labels"))
    if len(np.unique(data["train"][1])) < 2:
        raise DataError("the train split holds a single class; a classifier needs at least 2")
    shapes = {split: images.shape[1:] for split, (images, _) in data.items()}
    if len(set(shapes.values())) != 1:
        raise DataError(f"splits differ in image shape: {shapes}")

    keep = _subsample(len(data["train"][0]), max_train, np.random.default_rng(seed + 1))
    data["train"] = (data["train"][0][keep], data["train"][1][keep])

    say = progress if progress is not None else (lambda _msg: None)
    return [_run_one(name, data, num_classes, seed, say) for name in names]
