"""The one-vs-rest multi-label probe: each class's solution equals scikit-learn's LogisticRegression, entries
marked -1 are left out, C is chosen on val only and the test split is scored once with mAP."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from unirep.errors import DataError
from unirep.metrics import Metric
from unirep.probes import PROBES, FeatureSplit, SealedSplit
from unirep.probes.multilabel import MultiLabelLinearProbe


def problem(n: int, seed: int, d: int = 12, c: int = 4):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    W = np.random.default_rng(99).normal(size=(c, d))
    y = (X @ W.T + rng.normal(scale=1.0, size=(n, c)) > 0.3).astype(np.int8)
    return X, y


@pytest.mark.parametrize("C", [0.05, 3.0])
def test_each_class_matches_sklearn(C):
    X, y = problem(150, 0)
    probe = MultiLabelLinearProbe(C=C, tol=1e-8).fit(X, y)
    for c in range(y.shape[1]):
        reference = LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(X, y[:, c])
        np.testing.assert_allclose(probe.coef_[c], reference.coef_[0], atol=2e-4)
        np.testing.assert_allclose(probe.intercept_[c], reference.intercept_[0], atol=2e-4)


def test_ignored_entries_are_left_out_of_their_class_only():
    X, y = problem(120, 1)
    y_ignored = y.copy()
    y_ignored[:30, 2] = -1
    probe = MultiLabelLinearProbe(C=1.0, tol=1e-8).fit(X, y_ignored)
    reference = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(X[30:], y[30:, 2])
    np.testing.assert_allclose(probe.coef_[2], reference.coef_[0], atol=2e-4)
    untouched = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(X, y[:, 0])
    np.testing.assert_allclose(probe.coef_[0], untouched.coef_[0], atol=2e-4)


def test_select_on_val_refit_on_train_and_val_then_sealed_test():
    X, y = problem(300, 2)
    train, val = FeatureSplit(X[:150], y[:150]), FeatureSplit(X[150:220], y[150:220])
    assert PROBES.get("linear-multilabel") is MultiLabelLinearProbe
    probe = MultiLabelLinearProbe(Cs=[1e-3, 1e-1, 10.0], tol=1e-9)
    probe.select(train, val, Metric.MAP)
    best = max(probe.sweep_, key=probe.sweep_.get)
    assert probe.selected_params_ == {"C": best} and probe.val_score_ == probe.sweep_[best]
    refit = MultiLabelLinearProbe(C=best, tol=1e-9).fit(X[:220], y[:220])
    np.testing.assert_allclose(probe.coef_, refit.coef_, atol=1e-5)
    outcome = SealedSplit(X[220:], y[220:]).evaluate(probe, Metric.MAP_VOC07)
    assert outcome.predictions.shape == (80, 4)  # scores, since mAP ranks them
    assert outcome.score == pytest.approx(Metric.MAP_VOC07(y[220:], probe.decision_scores(X[220:])))
    assert outcome.score > 80


def test_label_metrics_and_single_label_targets_are_refused():
    X, y = problem(40, 3)
    probe = MultiLabelLinearProbe()
    with pytest.raises(DataError, match="multi-label tasks use"):
        probe.select(FeatureSplit(X[:20], y[:20]), FeatureSplit(X[20:], y[20:]), Metric.TOP1)
    with pytest.raises(DataError, match=r"\(N, C\) targets"):
        probe.fit(X, y[:, 0])
