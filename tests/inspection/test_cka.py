"""Linear CKA against a direct implementation of its definition, and the properties Kornblith et al. prove."""

from __future__ import annotations

import numpy as np
import pytest

from deepstrata.inspect.cka import center_gram, cka_from_grams, cka_matrix, gram_linear, linear_cka, paired_cka


def hsic_direct(k: np.ndarray, l: np.ndarray) -> float:
    """HSIC with the explicit centring matrix H = I - 11^T/n, as written in the paper."""
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ l @ h)) / (n - 1) ** 2


def cka_direct(x: np.ndarray, y: np.ndarray) -> float:
    k, l = x @ x.T, y @ y.T
    return hsic_direct(k, l) / np.sqrt(hsic_direct(k, k) * hsic_direct(l, l))


@pytest.fixture()
def reps():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 12))
    y = np.tanh(x @ rng.normal(size=(12, 7))) + 0.3 * rng.normal(size=(40, 7))
    return x, y


def test_matches_the_definition(reps):
    x, y = reps
    expected = cka_direct(x, y)
    assert 0.0 < expected < 1.0
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-10)
    assert cka_from_grams(gram_linear(x), gram_linear(y)) == pytest.approx(expected, rel=1e-10)


def test_identity_symmetry_and_range(reps):
    x, y = reps
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x))
    rng = np.random.default_rng(1)
    assert 0.0 <= linear_cka(x, rng.normal(size=(40, 30))) <= 1.0


def test_invariant_to_orthogonal_transforms_and_isotropic_scaling(reps):
    x, y = reps
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(12, 12)))
    base = linear_cka(x, y)
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x + 5.0, y - 2.0) == pytest.approx(base, rel=1e-10)


def test_not_invariant_to_any_invertible_map(reps):
    x, _ = reps
    stretch = np.diag(np.linspace(0.1, 10.0, 12))
    assert linear_cka(x, x @ stretch) < 0.99


def test_constant_representation_is_undefined():
    x = np.random.default_rng(0).normal(size=(10, 3))
    assert np.isnan(linear_cka(x, np.ones((10, 4))))


def test_centering_and_the_matrix(reps):
    x, y = reps
    kc = center_gram(gram_linear(x))
    np.testing.assert_allclose(kc.sum(0), 0.0, atol=1e-9)
    z = np.random.default_rng(3).normal(size=(40, 5, 2, 2))
    names, matrix = cka_matrix({"a": x, "b": y, "c": z})
    assert names == ["a", "b", "c"]
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    np.testing.assert_allclose(matrix, matrix.T)
    assert matrix[0, 1] == pytest.approx(linear_cka(x, y))
    assert matrix[1, 2] == pytest.approx(linear_cka(y, z.reshape(40, -1)))
    paired = paired_cka({"a": x, "b": y}, {"a": x @ np.eye(12) * 2, "b": z})
    assert paired["a"] == pytest.approx(1.0) and paired["b"] == pytest.approx(linear_cka(y, z.reshape(40, -1)))
