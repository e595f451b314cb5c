"""Representation geometry as training-free estimators: effective rank (RankMe), the eigenspectrum's power-law
decay (alpha-ReQ) and neural collapse's within/between-class variability (NC1), plus linear CKA between two feature
sets. Pure numpy (float64); `unirep inspect`'s representation section reads the same functions.

Definitions:
- RankMe (Garrido et al., ICML 2023): exp of the entropy of the normalised singular values of the (N, D) embedding
  matrix, p_k = sigma_k / sum(sigma) + eps, eps = 1e-7 as in the paper; features with k equal non-zero singular
  values give k. Not centred (as in the paper).
- alpha-ReQ (Agrawal et al., NeurIPS 2022): the slope alpha of log lambda_i = -alpha log i + c, least squares over
  the eigenvalues lambda_i of the centred features' covariance that are above 1e-10 of the largest (the numerical
  rank). alpha near 1 is the decay the paper links to good generalisation; small alpha = flat (whitened) spectrum.
- NC1 (Papyan et al., PNAS 2020): tr(Sigma_W Sigma_B^+) / C, Sigma_W the within-class covariance (1/N), Sigma_B the
  covariance of the class means around the global mean (1/C). 0 = every class collapsed to its mean. Computed as
  mean_i |M^+ (h_i - mu_{y_i})|^2 with M the (D, C) centred class means (Sigma_B = M M^T / C), never D x D.
- Linear CKA (Kornblith et al., ICML 2019): |Y^T X|_F^2 / (|X^T X|_F |Y^T Y|_F) on centred features of the same
  examples; 1 for X and any orthogonal rotation (or isotropic scaling) of X.

As estimators (the registry's contract: higher = "should transfer better"), each score is the number turned so that
higher is the direction its paper calls better, and the record keeps the raw numbers (`extra["details"]`):

| estimator | score | reads labels | why that direction |
|-----------|-------|--------------|--------------------|
| rankme    | RankMe | no | Garrido et al.: higher effective rank, better downstream accuracy |
| alpha-req | -abs(alpha - 1) | no | Agrawal et al.: decay near alpha = 1 generalises best |
| nc1       | -log10(NC1) | yes | classes more collapsed onto their means are easier to separate |

RankMe and alpha-ReQ read no labels (`label_free = True`): they say what a representation is, not how it fits a
task's classes, so their agreement with the probes (leaderboard) is the test of whether that predicts transfer.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from unirep.estimators import register_estimator
from unirep.estimators.base import Estimator, check_features, encode_labels

RANKME_EPS = 1e-7
SPECTRUM_RTOL = 1e-10


def singular_values(features: np.ndarray) -> np.ndarray:
    """Singular values of (N, D) features, from the smaller Gram matrix (O(N D min(N, D)))."""
    X = np.asarray(features, dtype=np.float64)
    gram = X @ X.T if X.shape[0] <= X.shape[1] else X.T @ X
    return np.sqrt(np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None))


def rankme(features: np.ndarray, eps: float = RANKME_EPS) -> float:
    """RankMe effective rank of (N, D) embeddings (Garrido et al. 2023, eq. 1)."""
    sigma = singular_values(features)
    if sigma.sum() <= 0:
        return 0.0
    p = sigma / sigma.sum() + eps
    return float(math.exp(-np.sum(p * np.log(p))))


def covariance_spectrum(features: np.ndarray) -> np.ndarray:
    """Eigenvalues (descending) of the centred features' covariance (1/N), those above SPECTRUM_RTOL of the largest."""
    X = np.asarray(features, dtype=np.float64)
    X = X - X.mean(axis=0, keepdims=True)
    lam = singular_values(X) ** 2 / len(X)
    return lam[lam > lam[0] * SPECTRUM_RTOL] if len(lam) and lam[0] > 0 else lam[:0]


def alpha_req(features: np.ndarray) -> dict[str, float]:
    """alpha of the eigenspectrum power law lambda_i ~ i^-alpha (Agrawal et al. 2022): {"alpha", "r2", "n_fit"}."""
    lam = covariance_spectrum(features)
    return fit_power_law(lam)


def fit_power_law(eigenvalues: np.ndarray) -> dict[str, float]:
    """Least-squares fit of log lambda_i = -alpha log i + c over all given eigenvalues (i = 1, 2, ...)."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if len(lam) < 2:
        return {"alpha": float("nan"), "r2": float("nan"), "n_fit": int(len(lam))}
    x, y = np.log(np.arange(1, len(lam) + 1)), np.log(lam)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    r2 = 1.0 - float(residual @ residual) / float(((y - y.mean()) ** 2).sum()) if np.ptp(y) > 0 else 1.0
    return {"alpha": float(-slope), "r2": r2, "n_fit": int(len(lam)), "intercept": float(intercept)}


def nc1(features: np.ndarray, labels: np.ndarray, rtol: float = 1e-8) -> float:
    """NC1 = tr(Sigma_W Sigma_B^+) / C (Papyan et al. 2020); singular values of M below rtol of the largest are 0."""
    X = np.asarray(features, dtype=np.float64)
    classes, y = np.unique(np.asarray(labels), return_inverse=True)
    means = np.stack([X[y == c].mean(axis=0) for c in range(len(classes))])  # (C, D)
    centred_means = means - X.mean(axis=0, keepdims=True)
    # The global mean is the mean of the examples; with unequal class sizes the class means do not average to it,
    # as in Papyan et al.'s definition.
    m_pinv = np.linalg.pinv(centred_means.T, rcond=rtol)  # (C, D) = M^+
    within = X - means[y]
    return float(np.mean(np.sum((within @ m_pinv.T) ** 2, axis=1)))


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA between (N, D1) and (N, D2) features of the same N examples (Kornblith et al. 2019)."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if len(X) != len(Y):
        raise ValueError(f"CKA needs the same examples: {len(X)} vs {len(Y)} rows")
    X = X - X.mean(axis=0, keepdims=True)
    Y = Y - Y.mean(axis=0, keepdims=True)
    if len(X) < max(X.shape[1], Y.shape[1]):  # the N x N Gram form is cheaper
        K, L = X @ X.T, Y @ Y.T
        num, den = float(np.sum(K * L)), math.sqrt(float(np.sum(K * K)) * float(np.sum(L * L)))
    else:
        num = float(np.sum((Y.T @ X) ** 2))
        den = math.sqrt(float(np.sum((X.T @ X) ** 2)) * float(np.sum((Y.T @ Y) ** 2)))
    return num / den if den > 0 else float("nan")



class GeometryEstimator(Estimator):
    """Shared part of the three: `_numbers` computes the raw values once, the score is read from them."""

    scale_invariant: ClassVar[bool] = True
    score_key: ClassVar[str] = ""

    def _numbers(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _score(self, X: np.ndarray, y: np.ndarray, source_logits: np.ndarray | None) -> float:
        return self._numbers(X, y)[self.score_key]

    def score_with_details(self, features, labels, source_logits=None, *, backbone=None) -> tuple[float, dict]:
        numbers = self._numbers(check_features(features), encode_labels(labels, len(features)))
        return float(numbers[self.score_key]), numbers


@register_estimator("rankme")
class RankMe(GeometryEstimator):
    name = "rankme"
    label_free = True
    score_key = "rankme"

    def _numbers(self, X, y):
        value = rankme(X)
        return {"rankme": value, "rankme_share": value / max(1, min(X.shape))}


@register_estimator("alpha-req")
class AlphaReQ(GeometryEstimator):
    name = "alpha-req"
    label_free = True
    score_key = "score"

    def _numbers(self, X, y):
        fit = alpha_req(X)
        return {"score": -abs(fit["alpha"] - 1.0), "alpha": fit["alpha"], "r2": fit["r2"], "n_fit": fit["n_fit"]}


@register_estimator("nc1")
class NeuralCollapse1(GeometryEstimator):
    name = "nc1"
    score_key = "score"

    def _numbers(self, X, y):
        value = nc1(X, y)
        # NC1 = 0 only when every example sits on its class mean; the floor keeps the log finite there.
        return {"score": -math.log10(max(value, 1e-300)), "nc1": value}
