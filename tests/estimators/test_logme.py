"""LogME against direct evaluations of the evidence with explicit matrices, and the exact/reference variants."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, stats

from unirep.errors import ConfigError, DataError
from unirep.estimators import create_estimator
from unirep.estimators.logme import log_evidence_at, logme_class_evidences


def direct_log_evidence(F, t, alpha, beta):
    """log p(t | alpha, beta) / N from the textbook formula with the D x D matrix A (all D eigenvalues)."""
    N, D = F.shape
    A = alpha * np.eye(D) + beta * F.T @ F
    m = beta * np.linalg.solve(A, F.T @ t)
    _, logdet = np.linalg.slogdet(A)
    value = (D / 2 * np.log(alpha) + N / 2 * np.log(beta) - 0.5 * logdet
             - beta / 2 * np.sum((t - F @ m) ** 2) - alpha / 2 * m @ m - N / 2 * np.log(2 * np.pi))
    return value / N


def marginal_log_likelihood(F, t, alpha, beta):
    """The same quantity as a Gaussian density: t ~ N(0, I/beta + F F^T/alpha)."""
    N = len(t)
    cov = np.eye(N) / beta + F @ F.T / alpha
    return stats.multivariate_normal(mean=np.zeros(N), cov=cov).logpdf(t) / N


def reference_algorithm(F, t, iterations=11, tol=1e-3, eps=1e-5):
    """thuml/LogME's fixed-point algorithm written with explicit matrices (A, A^-1, m) instead of a spectrum.

    Its log det sums over the min(N, D) largest eigenvalues of F^T F only."""
    N, D = F.shape
    sigma_all = np.linalg.eigvalsh(F.T @ F)[::-1]
    sigma_kept = sigma_all[: min(N, D)]
    alpha = beta = 1.0
    for _ in range(iterations):
        lam = alpha / beta
        A = alpha * np.eye(D) + beta * F.T @ F
        m = beta * np.linalg.solve(A, F.T @ t)
        gamma = np.sum(beta * sigma_all / (alpha + beta * sigma_all))
        m2, res2 = m @ m, np.sum((t - F @ m) ** 2)
        alpha, beta = gamma / (m2 + eps), (N - gamma) / (res2 + eps)
        if abs(alpha / beta - lam) / lam <= tol:
            break
    value = (D / 2 * np.log(alpha) + N / 2 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * sigma_kept))
             - beta / 2 * res2 - alpha / 2 * m2 - N / 2 * np.log(2 * np.pi))
    return value / N


@pytest.mark.parametrize("shape", [(120, 10), (30, 45)], ids=["n>d", "n<d"])
def test_exact_evidence_equals_explicit_formula_and_gaussian_density(shape):
    rng = np.random.default_rng(1)
    F = rng.normal(size=shape)
    y = rng.integers(0, 3, size=shape[0])
    F[:, 0] += 1.5 * y
    fits = logme_class_evidences(F, y)
    for c, fit in enumerate(fits):
        t = (y == c).astype(float)
        assert fit.evidence == pytest.approx(direct_log_evidence(F, t, fit.alpha, fit.beta), rel=1e-9, abs=1e-9)
        assert fit.evidence == pytest.approx(marginal_log_likelihood(F, t, fit.alpha, fit.beta), rel=1e-7, abs=1e-7)
    score = create_estimator("logme").score(F, y)
    assert score == pytest.approx(np.mean([f.evidence for f in fits]))


def test_fixed_point_is_the_maximum_of_the_evidence():
    rng = np.random.default_rng(2)
    F = rng.normal(size=(150, 8))
    y = rng.integers(0, 3, size=150)
    F[np.arange(150), y] += 2.0  # each class along its own axis: interior maxima (no bias term in LogME)
    for c, fit in enumerate(logme_class_evidences(F, y)):
        t = (y == c).astype(float)
        for da, db in [(1.2, 1), (1 / 1.2, 1), (1, 1.2), (1, 1 / 1.2)]:
            assert direct_log_evidence(F, t, fit.alpha * da, fit.beta * db) < fit.evidence
        best = optimize.minimize(lambda p, t=t: -direct_log_evidence(F, t, *np.exp(p)), x0=np.zeros(2),
                                 method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 4000})
        assert fit.evidence == pytest.approx(-best.fun, abs=1e-7)
        assert np.exp(best.x) == pytest.approx([fit.alpha, fit.beta], rel=1e-3)


def test_reference_variant_reproduces_the_reference_algorithm():
    rng = np.random.default_rng(3)
    for shape in [(100, 12), (25, 40)]:
        F = rng.normal(size=shape)
        y = rng.integers(0, 3, size=shape[0])
        F[:, 0] += y
        fits = logme_class_evidences(F, y, variant="reference")
        for c, fit in enumerate(fits):
            assert fit.evidence == pytest.approx(reference_algorithm(F, (y == c).astype(float)), rel=1e-8)


def test_variants_differ_by_the_truncated_log_det_when_n_below_d():
    rng = np.random.default_rng(4)
    N, D = 30, 80
    F = rng.normal(size=(N, D))
    y = rng.integers(0, 2, size=N)
    t = (y == 1).astype(float)
    for alpha, beta in [(0.5, 2.0), (40.0, 3.0)]:
        exact = log_evidence_at(F, t, alpha, beta)
        reference = log_evidence_at(F, t, alpha, beta, variant="reference")
        # Documented: the reference code omits (D - rank) log(alpha) from log det A.
        assert reference - exact == pytest.approx((D - N) / (2 * N) * np.log(alpha), rel=1e-9)
    exact_score = create_estimator("logme").score(F, y)
    reference_score = create_estimator("logme", variant="reference").score(F, y)
    assert abs(reference_score - exact_score) > 1.0  # "very different numbers" (PROTOCOLS.md)
    # Only the exact evidence is a property of the features' geometry, not their units.
    assert create_estimator("logme").score(10 * F, y) == pytest.approx(exact_score, abs=1e-7)
    assert abs(create_estimator("logme", variant="reference").score(10 * F, y) - reference_score) > 0.5


def test_variants_agree_when_features_have_full_column_rank():
    rng = np.random.default_rng(5)
    F = rng.normal(size=(200, 10))
    y = rng.integers(0, 4, size=200)
    F[np.arange(200), y] += 2.0
    exact = create_estimator("logme").score(F, y)
    reference = create_estimator("logme", variant="reference").score(F, y)
    assert reference == pytest.approx(exact, abs=1e-4)  # only the reference's looser stopping rule differs


def test_bad_variant_and_zero_features_raise():
    X, y = np.ones((10, 3)), np.arange(10) % 2
    with pytest.raises(ConfigError, match="variant 'fast'"):
        create_estimator("logme", variant="fast").score(X, y)
    with pytest.raises(DataError, match="all zero"):
        create_estimator("logme").score(np.zeros((10, 3)), y)
