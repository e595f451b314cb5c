"""The linear probe's row-space problem (fewer rows than dimensions, `unirep.probes.linear_problem._Problem`) is the
same problem as the standardised one: same minimiser (against scikit-learn solved tightly), same stopping rule
(the largest entry of the gradient in the standardised space), and the warm start of the refit maps between the
two row spaces. Real data: sklearn's digits pixels with a few random projections appended, so that a small train
set has n < D."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from unirep.metrics import Metric
from unirep.probes import FeatureSplit
from unirep.probes.linear import LinearProbe
from unirep.probes.linear_problem import _Problem
from unirep.probes.multinomial import multinomial_objective

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def wide(digits):
    """120 train / 100 val digits with 64 pixels + 136 fixed random mixtures of them (D = 200 > n)."""
    mixing = np.random.default_rng(0).normal(size=(64, 136)).astype(np.float32)

    def widen(X: np.ndarray) -> np.ndarray:
        return np.concatenate([X, X @ mixing / 8.0], axis=1).astype(np.float32)

    return widen(digits.X_train[:120]), digits.y_train[:120], widen(digits.X_val[:100]), digits.y_val[:100]


def test_row_space_minimiser_is_the_standardised_spaces_and_sklearns(wide):
    X, y, _, _ = wide
    C = 0.05
    solved = {row_space: LinearProbe(C=C, tol=1e-9, dtype="float64", max_iter=20_000, row_space=row_space,
                                     reselect_margin=None).fit(X, y) for row_space in (True, False)}
    scaler = StandardScaler().fit(X.astype(np.float64))
    reference = LogisticRegression(C=C, tol=1e-10, max_iter=100_000).fit(scaler.transform(X.astype(np.float64)), y)
    scale = np.abs(reference.coef_).max()
    for probe in solved.values():
        assert probe.coef_.shape == (10, 200)
        np.testing.assert_allclose(probe.coef_, reference.coef_, atol=1e-5 * scale)
    # Softmax is unchanged by a constant added to every intercept, which no penalty pins: compared centred.
    # (scikit-learn's own intercepts sit ~3e-6 off both, at any of its tolerances, where the weights agree to 6e-8.)
    reduced, full = (solved[row_space].intercept_ for row_space in (True, False))
    np.testing.assert_allclose(reduced - reduced.mean(), full - full.mean(), atol=1e-5 * scale)


def test_row_space_gradient_and_its_stopping_rule_are_the_standardised_spaces(wide):
    X, y, _, _ = wide
    classes = np.unique(y)
    cpu = torch.device("cpu")
    reduced = _Problem.build(X, y, classes, torch.float64, cpu, row_space=True)
    full = _Problem.build(X, y, classes, torch.float64, cpu)
    basis = reduced.basis
    assert basis.shape == (200, 120)
    torch.testing.assert_close(basis.T @ basis, torch.eye(120, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(reduced.X, full.X @ basis)
    rng = np.random.default_rng(1)
    W = torch.from_numpy(rng.normal(scale=0.05, size=(10, 120)))
    b = torch.from_numpy(rng.normal(scale=0.05, size=10))
    l2 = 1e-3
    loss, grad = multinomial_objective(reduced, l2)(torch.cat([W.reshape(-1), b]))
    full_loss, full_grad = multinomial_objective(full, l2)(torch.cat([reduced.lift(W).reshape(-1), b]))
    assert loss == pytest.approx(full_loss, rel=1e-12)
    largest = float(full_grad.abs().max())
    assert reduced.largest_gradient(grad) == pytest.approx(largest, rel=1e-10)
    # The bounds-first test agrees with the exact size on either side of it, near and far.
    for factor in (0.05, 0.9, 0.999, 1.001, 1.1, 30.0):
        assert reduced.gradient_within(grad, factor * largest) == (largest <= factor * largest)


def test_selection_and_refit_agree_in_both_spaces(wide):
    # The whole protocol (loose sweep, tight re-solves, the refit's problem on train+val with its own row space
    # and the warm start mapped into it) chooses the same C, scores the same on val and predicts the same.
    X, y, X_val, y_val = wide
    probes = {row_space: LinearProbe(Cs=np.logspace(-3, 1, 9), row_space=row_space).select(
        FeatureSplit(X, y), FeatureSplit(X_val, y_val), Metric.TOP1) for row_space in (True, False)}
    reduced, full = probes[True], probes[False]
    assert reduced.selected_params_ == full.selected_params_
    assert reduced.sweep_ == full.sweep_
    np.testing.assert_allclose(reduced.coef_, full.coef_, atol=1e-3 * np.abs(full.coef_).max())
    np.testing.assert_array_equal(reduced.predict(X_val), full.predict(X_val))
