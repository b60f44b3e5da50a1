"""The hand-engineered text baseline: TF-IDF of word 1-2 grams, then logistic regression.

This is the classical pipeline learned text encoders are measured against (Wang &
Manning 2012; Maas et al. 2011 report 88-89% on IMDB for bag-of-bigram linear models).
The features are engineered — word boundaries, lowercasing, n-gram range, sublinear tf,
idf weights — and only the linear map is learned. The vocabulary and idf are fitted on
the training split alone; the regularisation ``C`` is chosen on the validation split;
the test split is touched once, for the final scores. Every scikit-learn call runs under
``threadpool_limits`` so its thread pools do not slow the torch code that follows.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable

import numpy as np
from threadpoolctl import threadpool_limits

from deepstrata.baselines.image_features import SKLEARN_THREADS, BaselineResult
from deepstrata.errors import DataError
from deepstrata.metrics import accuracy, classification_metrics

NAME = "tfidf_lr"
C_GRID = (0.5, 2.0, 8.0, 32.0)
"""Inverse regularisation strengths tried on the validation split."""

MAX_ITER = 1000
MIN_DF = 2
"""An n-gram must occur in at least this many training texts (drops typos and one-off bigrams)."""


def tfidf_vectorizer():
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=MIN_DF, strip_accents="unicode",
                           lowercase=True, dtype=np.float32)


def _fit(features, y: np.ndarray, c: float, seed: int) -> tuple[Any, bool]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with threadpool_limits(limits=SKLEARN_THREADS), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=c, solver="liblinear" if len(np.unique(y)) == 2 else "lbfgs",
                                   max_iter=MAX_ITER, random_state=seed)
        model.fit(features, y)
    return model, bool(np.all(np.asarray(model.n_iter_) < MAX_ITER))


def run_text_baseline(
    train_texts: list[str], train_y: Any, val_texts: list[str], val_y: Any, test_texts: list[str], test_y: Any,
    num_classes: int, *, seed: int = 0, progress: Callable[[str], None] | None = None,
) -> BaselineResult:
    """Fit TF-IDF on train, pick C on val, refit on train and score on test; returns the comparison row."""
    say = progress or (lambda _msg: None)
    train_y, val_y, test_y = (np.asarray(y, dtype=np.int64) for y in (train_y, val_y, test_y))
    for split, texts, y in (("train", train_texts, train_y), ("val", val_texts, val_y), ("test", test_texts, test_y)):
        if len(texts) == 0:
            raise DataError(f"the {split} split is empty")
        if len(texts) != len(y):
            raise DataError(f"{split}: {len(y)} labels for {len(texts)} texts")
    if len(np.unique(train_y)) < 2:
        raise DataError("the train split holds a single class; a classifier needs at least 2")

    start = time.perf_counter()
    with threadpool_limits(limits=SKLEARN_THREADS):
        vectorizer = tfidf_vectorizer()
        try:
            f_train = vectorizer.fit_transform(train_texts)
        except ValueError as err:  # an empty vocabulary: no word occurs in two training texts
            raise DataError(f"TF-IDF baseline: {err}") from None
        f_val = vectorizer.transform(val_texts)
    say(f"{NAME}: {f_train.shape[1]:,} word 1-2 grams from {len(train_texts):,} training texts")
    scores: dict[str, float] = {}
    fitted: dict[float, tuple[Any, bool]] = {}
    for c in C_GRID:
        fitted[c] = _fit(f_train, train_y, c, seed)
        with threadpool_limits(limits=SKLEARN_THREADS):
            scores[repr(c)] = accuracy(val_y, fitted[c][0].predict(f_val))
        say(f"{NAME}: C={c:g} val accuracy {scores[repr(c)]:.4f}")
    # The search already fitted every C on the whole training split, so the chosen model is kept as is.
    best_c = C_GRID[int(np.argmax([scores[repr(c)] for c in C_GRID]))]
    model, converged = fitted[best_c]
    train_seconds = time.perf_counter() - start

    t0 = time.perf_counter()
    with threadpool_limits(limits=SKLEARN_THREADS):
        predictions = model.predict(vectorizer.transform(test_texts)).astype(np.int64)
    predict_seconds = time.perf_counter() - t0
    return BaselineResult(
        name=NAME,
        kind="baseline",
        metrics=classification_metrics(test_y, predictions, num_classes),
        train_seconds=train_seconds,
        feature_dim=int(f_train.shape[1]),
        params=int(model.coef_.size + model.intercept_.size),
        predictions=predictions,
        extra={
            "features": "TF-IDF word 1-2 grams, sublinear tf, min_df 2, lowercased, accents stripped",
            "C": best_c, "C_grid": list(C_GRID), "val_accuracy_by_C": scores, "converged": converged,
            "predict_seconds": round(predict_seconds, 4),
            "test_texts_per_second": round(len(test_texts) / max(predict_seconds, 1e-9), 1),
            "sklearn_threads": SKLEARN_THREADS,
        },
    )
