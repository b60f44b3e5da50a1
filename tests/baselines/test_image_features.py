"""Hand-engineered image baselines: feature shapes, accuracy on digits, honest model selection."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from deepstrata.baselines.image_features import (
    BASELINES,
    BaselineResult,
    hog_features,
    pixel_features,
    run_image_baselines,
)
from deepstrata.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def digits_split():
    """sklearn's 8x8 digits as uint8 [N, 1, 8, 8], split 64/16/20 stratified with a fixed seed."""
    d = load_digits()
    x = np.round(d.images * (255 / 16)).astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=0.2, stratify=y, random_state=0)
    train, val = train_test_split(train, test_size=0.2, stratify=y[train], random_state=0)
    return x[train], y[train], x[val], y[val], x[test], y[test]


@pytest.fixture(scope="module")
def digits_results(digits_split):
    return run_image_baselines(*digits_split, num_classes=10, seed=0)


@pytest.mark.parametrize(
    "shape, hog_dim",
    [((5, 1, 8, 8), 324 + 16), ((5, 1, 28, 28), 324 + 16), ((5, 3, 32, 32), 324 + 48)],
)
def test_feature_shapes(shape, hog_dim):
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    h = hog_features(x)
    assert h.shape == (shape[0], hog_dim) and h.dtype == np.float32
    assert np.all(np.isfinite(h))
    p = pixel_features(torch.from_numpy(x))
    assert p.shape == (shape[0], int(np.prod(shape[1:])))
    assert p.min() >= 0.0 and p.max() <= 1.0


def test_histogram_part_sums_to_one_per_channel():
    x = np.random.default_rng(1).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    hist = hog_features(x)[:, -48:].reshape(3, 3, 16)
    np.testing.assert_allclose(hist.sum(axis=2), 1.0, rtol=1e-5)


def test_features_reject_bad_input():
    with pytest.raises(DataError, match="uint8"):
        hog_features(np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(DataError, match="channels"):
        pixel_features(np.zeros((2, 2, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"\[N, C, H, W\]"):
        pixel_features(np.zeros((8, 8), np.uint8))


def test_digits_baselines_accuracy(digits_results):
    assert [r.name for r in digits_results] == list(BASELINES)
    for r in digits_results:
        assert isinstance(r, BaselineResult)
        assert r.kind == "baseline"
        assert r.metrics["accuracy"] > 0.9, r.name
        assert 0.0 < r.metrics["macro_f1"] <= 1.0
        assert r.train_seconds > 0
        assert r.extra["C"] in r.extra["C_grid"]
        assert r.predictions.shape == (360,)
    hog, pixels = digits_results
    assert hog.feature_dim == 340 and hog.params == 340 * 10 + 10
    assert pixels.feature_dim == 64 and pixels.params == 64 * 10 + 10


def test_row_shape(digits_results):
    row = digits_results[0].row()
    assert set(row) == {"name", "kind", "metrics", "train_seconds", "feature_dim", "params", "settings"}
    assert set(row["metrics"]) == {"accuracy", "macro_f1"}
    assert row["settings"]["C"] == digits_results[0].extra["C"]
    import json

    json.dumps(row)


def test_c_is_chosen_on_val_not_test(digits_split, digits_results):
    train_x, train_y, val_x, val_y, test_x, test_y = digits_split
    shuffled = np.random.default_rng(0).permutation(test_y)
    again = run_image_baselines(train_x, train_y, val_x, val_y, test_x, shuffled, 10, names=("pixels_lr",))
    assert again[0].extra["C"] == digits_results[1].extra["C"]
    np.testing.assert_array_equal(again[0].predictions, digits_results[1].predictions)
    assert again[0].metrics["accuracy"] < 0.5


def test_deterministic_and_leaves_torch_threads_alone(digits_split, digits_results):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        again = run_image_baselines(*digits_split, 10, names=("hog_lr",), seed=0, max_train=500)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert again[0].extra["train_size"] == 500
    third = run_image_baselines(*digits_split, 10, names=("hog_lr",), seed=0, max_train=500)
    assert torch.get_num_threads() == before
    np.testing.assert_array_equal(again[0].predictions, third[0].predictions)
    assert again[0].extra["C"] == third[0].extra["C"]


def test_no_thread_limits_leak_after_run(digits_split):
    from threadpoolctl import threadpool_info

    def pools():
        return sorted((p["filepath"], p["num_threads"]) for p in threadpool_info())

    run_image_baselines(*digits_split, 10, names=("pixels_lr",))
    before_torch, before_pools = torch.get_num_threads(), pools()
    run_image_baselines(*digits_split, 10, names=("pixels_lr",))
    assert torch.get_num_threads() == before_torch
    assert pools() == before_pools


def test_run_rejects_bad_arguments(digits_split):
    with pytest.raises(ConfigError, match="unknown baseline"):
        run_image_baselines(*digits_split, 10, names=("sift_svm",))
    train_x, train_y, val_x, val_y, test_x, test_y = digits_split
    with pytest.raises(DataError, match="labels"):
        run_image_baselines(train_x, train_y[:-1], val_x, val_y, test_x, test_y, 10)
    with pytest.raises(DataError, match="shape"):
        run_image_baselines(train_x, train_y, val_x[:, :, :4, :4].copy(), val_y, test_x, test_y, 10)
