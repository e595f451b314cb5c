"""NLEEP: LEEP on the posteriors of PCA(80 %) + diagonal GMM, seeded, with a subsample cap for the fit."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from unirep.errors import ConfigError
from unirep.estimators import create_estimator


def leep_on_posteriors_by_loops(theta, y):
    """Nguyen et al.'s LEEP with the posteriors theta (N, Z) given directly, one example at a time."""
    n, k = theta.shape
    classes = np.unique(y)
    joint = {(c, z): sum(theta[i, z] for i in range(n) if y[i] == c) / n for c in classes for z in range(k)}
    marginal = {z: sum(joint[c, z] for c in classes) for z in range(k)}
    terms = [sum(joint[y[i], z] / marginal[z] * theta[i, z] for z in range(k) if marginal[z] > 0) for i in range(n)]
    return float(np.mean(np.log(terms)))


def test_nleep_is_leep_on_gmm_posteriors(blobs):
    X, y, _ = blobs
    scaled = (X - X.mean(axis=0)) / X.std()
    reduced = PCA(n_components=0.8, svd_solver="full").fit_transform(scaled)
    gmm = GaussianMixture(n_components=5 * 4, covariance_type="diag", random_state=0).fit(reduced)
    posteriors = gmm.predict_proba(reduced)
    expected = leep_on_posteriors_by_loops(posteriors, y)
    assert create_estimator("nleep").score(X, y) == pytest.approx(expected, rel=1e-6)


def test_nleep_is_seeded_and_caps_the_fit_sample(blobs):
    X, y, _ = blobs
    capped = create_estimator("nleep", max_fit_samples=100, seed=3)
    assert capped.score(X, y) == capped.score(X, y)
    assert capped.posteriors(X, 4).shape == (len(X), 20)  # posteriors for every row, not just the fitted ones
    assert create_estimator("nleep", component_ratio=2).posteriors(X, 4).shape == (len(X), 8)


def test_nleep_bad_settings_raise(blobs):
    X, y, _ = blobs
    with pytest.raises(ConfigError, match="variance"):
        create_estimator("nleep", variance=1.5).score(X, y)
    with pytest.raises(ConfigError, match="component_ratio"):
        create_estimator("nleep", component_ratio=0).score(X, y)
