"""RankMe, alpha-ReQ and NC1 as estimators: each score is the direct formula's number turned as the module says, on
features built so the answer is known, and the estimator protocol records the raw numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unirep.estimators import create_estimator


def test_rankme_score_is_k_for_k_equal_singular_values():
    rng = np.random.default_rng(3)
    U = np.linalg.qr(rng.standard_normal((90, 6)))[0]
    V = np.linalg.qr(rng.standard_normal((30, 6)))[0]
    labels = np.arange(90) % 3
    value, details = create_estimator("rankme").score_with_details(2.5 * U @ V.T, labels)
    assert value == pytest.approx(6.0, rel=1e-4)
    assert details["rankme_share"] == pytest.approx(6.0 / 30, rel=1e-4)


def test_alpha_req_score_is_minus_the_distance_of_the_fitted_decay_from_one():
    # A centred design whose covariance eigenvalues are exactly i^-2 (alpha = 2): score -1.
    rng = np.random.default_rng(0)
    n, d = 400, 20
    G = rng.standard_normal((n, d))
    U = np.linalg.qr(G - G.mean(axis=0))[0]  # orthonormal columns inside the centred span: each has mean 0
    lam = np.arange(1, d + 1, dtype=float) ** -2.0
    X = U * np.sqrt(lam * n)
    value, details = create_estimator("alpha-req").score_with_details(X, np.arange(n) % 2)
    assert details["alpha"] == pytest.approx(2.0, abs=0.05)
    assert value == pytest.approx(-abs(details["alpha"] - 1.0))


def test_nc1_score_is_minus_log10_of_the_direct_trace_formula():
    rng = np.random.default_rng(1)
    y = np.arange(120) % 4
    X = rng.normal(size=(4, 8))[y] * 3 + rng.normal(size=(120, 8))
    mu = X.mean(axis=0)
    means = np.stack([X[y == c].mean(axis=0) for c in range(4)])
    sigma_w = sum(np.outer(x - means[c], x - means[c]) for x, c in zip(X, y)) / len(X)
    sigma_b = (means - mu).T @ (means - mu) / 4
    direct = np.trace(sigma_w @ np.linalg.pinv(sigma_b)) / 4
    value, details = create_estimator("nc1").score_with_details(X, y)
    assert details["nc1"] == pytest.approx(direct, rel=1e-8)
    assert value == pytest.approx(-math.log10(direct), rel=1e-9)


def test_the_estimator_protocol_records_the_raw_numbers():
    from unirep.config import EvalConfig, load_config
    from unirep.estimators.protocol import EstimatorProtocol
    from unirep.metrics import Metric
    from unirep.probes import FeatureSplit, SealedSplit
    from unirep.protocols import TaskFeatures

    rng = np.random.default_rng(2)
    X = rng.normal(size=(120, 6)).astype(np.float32)
    y = np.arange(120) % 3
    data = TaskFeatures(train=FeatureSplit(X[:60], y[:60]), val=FeatureSplit(X[60:90], y[60:90]),
                        test=SealedSplit(X[90:], y[90:]))
    cfg = load_config(EvalConfig, dotlist=["tasks=[sklearn-digits]", "protocols=[nc1]"], backbones=["raw-pixels"])
    outcome = EstimatorProtocol(cfg, estimator="nc1").run(data, Metric.TOP1, seed=0)
    assert outcome.extra["details"]["nc1"] == pytest.approx(10 ** -outcome.score, rel=1e-9)
    assert outcome.extra["n_scored"] == 90
