"""H-score and shrinkage H-score against their definitions with explicit covariance matrices."""

from __future__ import annotations

import numpy as np
import pytest
from estimator_references import class_means_by_loop

from unirep.estimators import create_estimator


def ledoit_wolf_by_formula(X):
    """Ledoit & Wolf (2004): S = X_c^T X_c / N, target mu I, shrinkage = min(b2, d2) / d2 with
    d2 = |S - mu I|_F^2 and b2 = (1/N^2) sum_k |x_k x_k^T - S|_F^2."""
    Xc = X - X.mean(axis=0)
    N, D = Xc.shape
    S = Xc.T @ Xc / N
    mu = np.trace(S) / D
    d2 = np.sum((S - mu * np.eye(D)) ** 2)
    b2 = sum(np.sum((np.outer(x, x) - S) ** 2) for x in Xc) / N**2
    shrinkage = min(b2, d2) / d2
    return (1 - shrinkage) * S + shrinkage * mu * np.eye(D), shrinkage


def test_hscore_equals_definition(blobs):
    X, y, _ = blobs
    expected = np.trace(np.linalg.pinv(np.cov(X.T)) @ np.cov(class_means_by_loop(X, y).T))
    assert create_estimator("hscore").score(X, y) == pytest.approx(expected, rel=1e-10)


def test_hscore_uses_the_pseudo_inverse_for_singular_covariance():
    rng = np.random.default_rng(0)
    y = np.arange(40) % 4
    X = rng.normal(size=(40, 6)) + y[:, None]
    X = np.hstack([X, X[:, :2] + X[:, 2:4]])  # rank-deficient: 8 columns, rank 6
    expected = np.trace(np.linalg.pinv(np.cov(X.T)) @ np.cov(class_means_by_loop(X, y).T))
    assert create_estimator("hscore").score(X, y) == pytest.approx(expected, rel=1e-8)


def test_shrinkage_hscore_equals_definition(blobs):
    X, y, _ = blobs
    X = X[:60]  # few samples per dimension: where shrinkage matters
    y = y[:60]
    cov_shrunk, shrinkage = ledoit_wolf_by_formula(X)
    assert 0 < shrinkage < 1
    expected = np.trace(np.linalg.inv(cov_shrunk) @ ((1 - shrinkage) * np.cov(class_means_by_loop(X, y).T)))
    assert create_estimator("hscore-shrinkage").score(X, y) == pytest.approx(expected, rel=1e-9)


def test_shrinkage_tames_the_pseudo_inverse_when_n_is_close_to_d():
    # With N barely above D the pseudo-inverse of the sample covariance inflates the plain H-score on pure noise.
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(60, 50)), np.arange(60) % 3
    assert create_estimator("hscore-shrinkage").score(X, y) < 0.2 * create_estimator("hscore").score(X, y)


def test_hscore_is_invariant_to_invertible_linear_maps(blobs):
    X, y, _ = blobs
    M = np.random.default_rng(2).normal(size=(X.shape[1], X.shape[1]))
    assert create_estimator("hscore").score(X @ M, y) == pytest.approx(create_estimator("hscore").score(X, y),
                                                                        rel=1e-8)
