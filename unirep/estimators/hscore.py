"""H-score (Bao et al., ICIP 2019) and its shrinkage form (Ibrahim et al., ICLR 2023).

H(f) = tr(cov(f)^+ cov(E[f | y])): how much of the features' variance lies between the class means, measured in
the metric of the (pseudo-)inverse feature covariance. With N small against D the sample covariance is
ill-conditioned and the pseudo-inverse amplifies noise directions; Ibrahim et al. replace it by the Ledoit-Wolf
shrinkage estimate cov_a = (1 - a) S + a mu I and scale the between-class term by (1 - a):

    H_a(f) = tr(cov_a(f)^-1 (1 - a) cov(E[f | y])).

Both are invariant to multiplying the features by a constant (so is the Ledoit-Wolf shrinkage a); the plain
H-score is invariant to any invertible linear map of the features. Covariances follow the published code:
np.cov (1/(N-1)) for cov(E[f|y]) and, for the shrinkage form, sklearn's LedoitWolf (1/N) for cov_a.
"""

from __future__ import annotations

import numpy as np
from sklearn.covariance import LedoitWolf

from unirep.estimators import register_estimator
from unirep.estimators.base import Estimator, class_one_hot

# Relative cut for the pseudo-inverse: the published H-score code uses np.linalg.pinv(cov, rcond=1e-15).
PINV_RCOND = 1e-15


def class_mean_matrix(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, D) matrix whose row i is the mean feature of example i's class: E[f | y] as a random variable."""
    onehot = class_one_hot(y)
    means = (onehot.T @ X) / onehot.sum(axis=0)[:, None]
    return means[y]


def hscore(X: np.ndarray, y: np.ndarray) -> float:
    cov_f = np.cov(X, rowvar=False)
    cov_g = np.cov(class_mean_matrix(X, y), rowvar=False)
    return float(np.trace(np.linalg.pinv(np.atleast_2d(cov_f), rcond=PINV_RCOND) @ np.atleast_2d(cov_g)))


def shrinkage_hscore(X: np.ndarray, y: np.ndarray) -> float:
    centred = X - X.mean(axis=0, keepdims=True)
    ledoit_wolf = LedoitWolf(assume_centered=False).fit(centred)
    shrinkage = ledoit_wolf.shrinkage_
    cov_g = np.atleast_2d(np.cov(class_mean_matrix(centred, y), rowvar=False))
    # cov_a is positive definite whenever a > 0, so a linear solve replaces the pseudo-inverse.
    solved = np.linalg.lstsq(ledoit_wolf.covariance_, (1.0 - shrinkage) * cov_g, rcond=None)[0]
    return float(np.trace(solved))


@register_estimator("hscore")
class HScore(Estimator):
    """H-score with the pseudo-inverse feature covariance (Bao et al. 2019)."""

    name = "hscore"
    scale_invariant = True

    def _score(self, X: np.ndarray, y: np.ndarray, source_logits: np.ndarray | None) -> float:
        return hscore(X, y)


@register_estimator("hscore-shrinkage")
class ShrinkageHScore(Estimator):
    """H-score with the Ledoit-Wolf shrinkage covariance (Ibrahim et al., ICLR 2023)."""

    name = "hscore-shrinkage"
    scale_invariant = True

    def _score(self, X: np.ndarray, y: np.ndarray, source_logits: np.ndarray | None) -> float:
        return shrinkage_hscore(X, y)
