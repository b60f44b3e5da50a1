"""The metrics every comparison row uses must agree with scikit-learn's definitions."""

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score

from deepstrata.errors import DataError
from deepstrata.metrics import accuracy, classification_metrics, confusion_matrix, macro_f1


@pytest.mark.parametrize("seed", range(5))
def test_matches_sklearn_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    k = 7
    y_true = rng.integers(0, k, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, k, 200))
    labels = list(range(k))
    assert accuracy(y_true, y_pred) == pytest.approx(np.mean(y_true == y_pred))
    assert macro_f1(y_true, y_pred, k) == pytest.approx(
        f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)
    )
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred, k), sk_confusion(y_true, y_pred, labels=labels))


def test_missing_classes_count_as_zero_f1():
    k = 6
    y_true = np.array([0, 0, 1, 1, 2, 3])
    y_pred = np.array([0, 1, 1, 1, 2, 4])
    expected = f1_score(y_true, y_pred, average="macro", labels=list(range(k)), zero_division=0)
    assert macro_f1(y_true, y_pred, k) == pytest.approx(expected)
    cm = confusion_matrix(y_true, y_pred, k)
    assert cm.shape == (k, k) and cm.dtype == np.int64
    assert cm[5].sum() == 0 and cm[:, 5].sum() == 0
    assert cm.sum() == len(y_true)


def test_accepts_torch_tensors_and_lists():
    y_true = torch.tensor([0, 1, 2, 2])
    y_pred = [0, 2, 2, 2]
    out = classification_metrics(y_true, y_pred, 3)
    assert set(out) == {"accuracy", "macro_f1"}
    assert all(isinstance(v, float) for v in out.values())
    assert out["accuracy"] == pytest.approx(0.75)


def test_perfect_predictions():
    y = np.arange(10) % 4
    assert classification_metrics(y, y, 4) == {"accuracy": 1.0, "macro_f1": 1.0}


def test_user_errors():
    with pytest.raises(DataError, match="3 labels"):
        accuracy([0, 1, 2], [0, 1])
    with pytest.raises(DataError, match="empty"):
        accuracy([], [])
    with pytest.raises(DataError, match="out of range"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(DataError, match="1-D"):
        macro_f1(np.zeros((2, 2), int), np.zeros((2, 2), int), 2)
