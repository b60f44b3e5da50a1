"""Compactness (``inspect.compactness``): sizes, probe and 1-NN accuracy, checked by hand and against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier

from deepstrata.inspect.compactness import compactness, nearest_neighbour_accuracy
from deepstrata.inspect.probes import ProbeSettings, probe_accuracy, probe_split


def test_nearest_neighbour_accuracy_matches_scikit_learn():
    x, y = load_digits(return_X_y=True)
    x, y = x[:600].astype(np.float32), y[:600]
    fit_idx, score_idx = probe_split(y, 0.5, 0)
    knn = KNeighborsClassifier(1, metric="cosine", algorithm="brute").fit(x[fit_idx], y[fit_idx])
    expected = float(np.mean(knn.predict(x[score_idx]) == y[score_idx]))
    assert nearest_neighbour_accuracy(x, y, fit_idx, score_idx) == pytest.approx(expected, abs=1e-12)
    assert 0.9 < expected < 1.0


def test_a_tiny_case_by_hand():
    # raw: 4-d; embedding: 2-d. Scored examples 4 and 5; their cosine-nearest fit examples by hand below.
    raw = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1],
                    [0.9, 0.1, 0, 0], [0, 0, 0.2, 1]], dtype=np.float32)
    emb = np.array([[1, 0], [0, 1], [1, 0.1], [0, 1.1], [0.1, 1], [1, 0]], dtype=np.float32)
    labels = np.array([0, 1, 0, 1, 0, 1])
    fit_idx, score_idx = np.arange(4), np.array([4, 5])
    record = compactness(raw, 4, emb, labels, layer="features", fit_idx=fit_idx, score_idx=score_idx)
    raw_row, emb_row = record["representations"]
    assert record["compression"] == 2.0 and record["split"] == {"fit": 4, "score": 2}
    assert (raw_row["dim"], raw_row["bytes_per_example"], emb_row["dim"], emb_row["bytes_per_example"]) == (4, 16, 2, 8)
    # raw: 4 is nearest 0 (label 0, right), 5 nearest 3 (label 1, right); embedding: 4 is nearest 1 (label 1,
    # wrong), 5 nearest 0 (label 0, wrong)
    assert raw_row["nn_accuracy"] == 1.0 and emb_row["nn_accuracy"] == 0.0
    settings = ProbeSettings()
    assert raw_row["probe_accuracy"] == pytest.approx(probe_accuracy(raw, labels, fit_idx, score_idx, settings)[0])
    no_space = compactness(None, 32, emb, labels, layer="features", fit_idx=fit_idx, score_idx=score_idx,
                           raw_name="raw input (token ids)")
    assert no_space["representations"][0] == {"name": "raw input (token ids)", "dim": 32, "bytes_per_example": 128,
                                               "probe_accuracy": None, "nn_accuracy": None}
