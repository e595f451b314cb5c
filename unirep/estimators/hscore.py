"""H-score (Bao et al., ICIP 2019) and its shrinkage form (Ibrahim et al., ICLR 2023).

H(f) = tr(cov(f)^+ cov(E[f | y])): how much of the features' variance lies between the class means, measured in
the metric of the (pseudo-)inverse feature covariance. With N small against D the sample covariance is
ill-conditioned and the pseudo-inverse amplifies noise directions; Ibrahim et al. replace it by the Ledoit-Wolf
shrinkage estimate cov_a = (1 - a) S + a mu I and scale the between-class term by (1 - a):

    H_a(f) = tr(cov_a(f)^-1 (1 - a) cov(E[f | y])).

Both are invariant to multiplying the features by a constant (so is the Ledoit-Wolf shrinkage a); the plain
H-score is invariant to any invertible linear map of the features. Covariances follow the published code:
np.cov (1/(N-1)) for cov(E[f|y]) and, for the shrinkage form, sklearn's LedoitWolf (1/N) for cov_a.

Both work on the centred features' smaller Gram matrix (N x N when N < D, else D x D), never on a D x D
pseudo-inverse or solve when N < D: the cost follows O(N D min(N, D)). The plain H-score needs its
eigendecomposition (`unirep.estimators.spectrum`); the shrinkage form, whose covariance is positive definite, one
Cholesky solve. Directions whose eigenvalue is below 1e-10 of the largest count as zero (the published code's
pinv cut, 1e-15, lies inside float64 rounding noise of the Gram matrix; on real features both cuts keep the same
directions). With N <= D and features of rank N - 1 (after centring) the plain H-score is C - 1 whatever the
features: every direction of the sample is available to it. The shrinkage form is the one to read there.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from unirep.estimators import register_estimator
from unirep.estimators.base import Estimator, class_one_hot
from unirep.estimators.spectrum import GramSpectrum, gram_spectrum


def between_class_spectrum(X: np.ndarray, y: np.ndarray) -> tuple[GramSpectrum, np.ndarray]:
    """The centred features' spectrum and, per kept direction u_i, q_i = |Q u_i|^2: the share of that unit direction
    lying in the span of the centred class indicators (Q = projection onto it, of rank C - 1).

    Why this is all the H-scores need: with Xc = U S V^T and Gc = Q Xc (the centred class-mean matrix),
    tr(pinv(Xc^T Xc) Gc^T Gc) = tr(U^T Q U) = sum_i q_i, and Q = W W^T - 1 1^T / N with W = onehot / sqrt(N_c).
    """
    centred = X - X.mean(axis=0, keepdims=True)
    onehot = class_one_hot(y)
    block = np.hstack([onehot / np.sqrt(onehot.sum(axis=0)), np.full((len(X), 1), 1.0 / np.sqrt(len(X)))])
    spec = gram_spectrum(centred, block)
    q = (spec.coords[:, :-1] ** 2).sum(axis=1) - spec.coords[:, -1] ** 2
    return spec, np.maximum(q, 0.0)


def hscore(X: np.ndarray, y: np.ndarray) -> float:
    # The 1/(N-1) of both covariances cancel; the pseudo-inverse keeps the directions above the rank cut.
    _, q = between_class_spectrum(X, y)
    return float(np.sum(q))


def ledoit_wolf_shrinkage(row_norms2: np.ndarray, gram_frobenius2: float, n_features: int) -> tuple[float, float]:
    """(shrinkage a, target scale mu) of sklearn's `ledoit_wolf_shrinkage` on centred data, from the Gram matrix.

    sklearn sums D x D products: beta_ = sum((X^2)^T X^2) = sum_i |x_i|^4 and delta_ = |X^T X|_F^2 / N^2, the
    latter equal to the smaller Gram matrix's |.|_F^2 / N^2, so nothing D x D is formed when N < D.
    """
    n = len(row_norms2)
    if n_features == 1:
        return 0.0, float(np.sum(row_norms2) / n)  # sklearn: a single feature is never shrunk
    trace = float(np.sum(row_norms2)) / n  # trace of the empirical covariance (1/N)
    mu = trace / n_features
    delta_ = gram_frobenius2 / n**2
    beta = (float(np.sum(row_norms2**2)) / n - delta_) / (n_features * n)
    delta = (delta_ - 2.0 * mu * trace + n_features * mu**2) / n_features
    beta = min(beta, delta)
    return (0.0 if beta == 0 else beta / delta), mu


def shrinkage_hscore(X: np.ndarray, y: np.ndarray) -> float:
    # cov_a = (1 - a) S + a mu I with S = Xc^T Xc / N is positive definite when a mu > 0, so one Cholesky solve of
    # the smaller side replaces an eigendecomposition (~10x cheaper at N = D = 1,200). By the push-through identity
    # Xc cov_a^-1 Xc^T = K ((1 - a) K / N + a mu I)^-1 with K = Xc Xc^T, so for N <= D nothing D x D is formed.
    n, d = X.shape
    centred = X - X.mean(axis=0, keepdims=True)
    gram = centred @ centred.T if n <= d else centred.T @ centred
    shrinkage, mu = ledoit_wolf_shrinkage(np.einsum("ij,ij->i", centred, centred), float(np.sum(gram * gram)), d)
    if shrinkage > 0 and mu > 0:
        onehot = class_one_hot(y)
        if n <= d:
            # tr(cov_a^-1 Xc^T Q Xc) = tr(W^T K M^-1 W): Q = W W^T - 1 1^T / N and K 1 = 0.
            block, lhs = onehot / np.sqrt(onehot.sum(axis=0)), gram
            system = (1.0 - shrinkage) / n * gram
        else:
            # Xc^T Q Xc = Z^T Z with Z's rows sqrt(N_c) (class mean of Xc).
            block = centred.T @ onehot / np.sqrt(onehot.sum(axis=0))
            lhs, system = None, (1.0 - shrinkage) / n * gram
        system.flat[:: len(system) + 1] += shrinkage * mu
        try:
            solved = cho_solve(cho_factor(system, lower=True), block)
        except np.linalg.LinAlgError:
            pass  # numerically not positive definite: the spectral form below handles it
        else:
            projected = block if lhs is None else lhs @ block
            return float((1.0 - shrinkage) / (n - 1) * np.sum(projected * solved))
    # a = 0 (one feature, or no estimated noise): cov_a = S, inverted on its row space through the spectrum;
    # there cov_a has eigenvalues (1 - a) sigma_i / N + a mu and v_i^T Xc^T Q Xc v_i = sigma_i q_i.
    spec, q = between_class_spectrum(X, y)
    shrunk = (1.0 - shrinkage) * spec.sigma / n + shrinkage * mu
    return float((1.0 - shrinkage) / (n - 1) * np.sum(spec.sigma * q / shrunk))


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
