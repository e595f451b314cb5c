"""The smaller-side (Gram matrix) forms of the estimators against the direct D x D computations they replaced, on
real features (sklearn digits pixels: 64-D, with constant pixels, so rank-deficient) in both shapes, N < D and
N > D. The references are the previous implementation's formulas: numpy's pinv of the D x D covariance, sklearn's
LedoitWolf with a D x D solve, sklearn's full-SVD PCA."""

from __future__ import annotations

import numpy as np
import pytest
from estimator_references import class_means_by_loop
from sklearn.covariance import LedoitWolf, ledoit_wolf_shrinkage
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from unirep.estimators import create_estimator
from unirep.estimators.hscore import ledoit_wolf_shrinkage as gram_ledoit_wolf_shrinkage
from unirep.estimators.logme import logme_class_evidences
from unirep.estimators.nleep import principal_components
from unirep.estimators.spectrum import gram_spectrum

SHAPES = {"n<d": 40, "n>d": 600}  # rows of the 64-D digits


@pytest.fixture(scope="module", params=list(SHAPES))
def digits(request):
    X, y = load_digits(return_X_y=True)
    rows = np.random.default_rng(0).permutation(len(X))[: SHAPES[request.param]]
    # float32 like the feature cache, then float64 as the estimators read it.
    return X[rows].astype(np.float32).astype(np.float64), y[rows]


def test_hscore_equals_the_pseudo_inverse_definition(digits):
    X, y = digits
    assert np.linalg.matrix_rank(X - X.mean(axis=0)) < min(X.shape)  # the rank cut is exercised
    expected = np.trace(np.linalg.pinv(np.cov(X.T), rcond=1e-15) @ np.cov(class_means_by_loop(X, y).T))
    assert create_estimator("hscore").score(X, y) == pytest.approx(expected, rel=1e-7)


def test_shrinkage_hscore_equals_sklearn_ledoit_wolf_with_a_d_by_d_solve(digits):
    X, y = digits
    centred = X - X.mean(axis=0)
    lw = LedoitWolf().fit(centred)
    assert 0 < lw.shrinkage_ < 1
    row_norms2 = np.sum(centred**2, axis=1)
    shrinkage, _ = gram_ledoit_wolf_shrinkage(row_norms2, gram_spectrum(centred, centred[:, :1]).gram_frobenius2,
                                              X.shape[1])
    assert shrinkage == pytest.approx(ledoit_wolf_shrinkage(centred), rel=1e-9)
    cov_g = np.cov(class_means_by_loop(centred, y).T)
    expected = np.trace(np.linalg.solve(lw.covariance_, (1 - lw.shrinkage_) * cov_g))
    assert create_estimator("hscore-shrinkage").score(X, y) == pytest.approx(expected, rel=1e-8)


def test_logme_spectrum_equals_the_svd_of_the_features(digits):
    X, y = digits
    onehot = np.eye(10)[y]
    spec = gram_spectrum(X, onehot)
    u, s, _ = np.linalg.svd(X, full_matrices=False)
    kept = s > s[0] * 1e-5  # the same cut as the Gram eigenvalues' 1e-10
    assert np.sort(spec.sigma)[::-1] == pytest.approx(s[kept] ** 2, rel=1e-8)
    # Label mass in the column space: rotation-free, so comparable whatever the eigenvector signs.
    assert (spec.coords**2).sum(axis=0) == pytest.approx(((u[:, kept].T @ onehot) ** 2).sum(axis=0), rel=1e-9)
    assert spec.rank_deficit == X.shape[1] - int(kept.sum())
    n, d = X.shape
    for c, fit in enumerate(logme_class_evidences(X, y)):
        # The evidence with the explicit D x D matrix A = alpha I + beta F^T F (all D eigenvalues in log det A).
        t = (y == c).astype(float)
        A = fit.alpha * np.eye(d) + fit.beta * X.T @ X
        m = fit.beta * np.linalg.solve(A, X.T @ t)
        direct = (d / 2 * np.log(fit.alpha) + n / 2 * np.log(fit.beta) - 0.5 * np.linalg.slogdet(A)[1]
                  - fit.beta / 2 * np.sum((t - X @ m) ** 2) - fit.alpha / 2 * m @ m - n / 2 * np.log(2 * np.pi)) / n
        assert fit.converged
        assert fit.evidence == pytest.approx(direct, rel=1e-8, abs=1e-8)


def test_pca_of_the_smaller_gram_equals_sklearn_full_svd(digits):
    X, _ = digits
    mean, components = principal_components(X, 0.8)
    pca = PCA(n_components=0.8, svd_solver="full").fit(X)
    assert components.shape == pca.components_.shape
    signs = np.sign(np.sum(components * pca.components_, axis=1))
    assert signs[:, None] * components == pytest.approx(pca.components_, abs=1e-7)
    assert mean == pytest.approx(pca.mean_)


def test_shrinkage_hscore_of_one_feature_is_unshrunk():
    # sklearn never shrinks a single feature (a = 0): the spectral path, cov_a = S, instead of the Cholesky solve.
    X, y = load_digits(return_X_y=True)
    x = X[:300, 36:37]
    lw = LedoitWolf().fit(x - x.mean())
    assert lw.shrinkage_ == 0
    expected = np.cov(class_means_by_loop(x - x.mean(), y[:300]).T) / lw.covariance_[0, 0]
    assert create_estimator("hscore-shrinkage").score(x, y[:300]) == pytest.approx(float(expected), rel=1e-10)
