"""The one linear-algebra kernel LogME and the H-scores share: the nonzero spectrum of F^T F and the coordinates of
a few label vectors in its eigenbasis, computed on the *smaller* side of F (N, D).

Every quantity these estimators need is a function of F's singular values and of U^T B, where U holds F's left
singular vectors and B (N, m) a handful of label vectors (one-hot classes, class indicators scaled to unit norm).
The eigendecomposition of the N x N Gram matrix F F^T gives U directly when N <= D; when N > D the D x D matrix
F^T F gives V and U^T B = S^-1 V^T (F^T B). Either way the cost is O(N D min(N, D)) for the product plus
O(min(N, D)^3) for the eigendecomposition, never a D x D inverse when N < D (3,072-D raw pixels on a few
hundred images: the D x D pseudo-inverse cost ~57 s, the N x N form a fraction of a second).

Float64 throughout: the plain H-score counts every direction above the rank cut equally, whatever its variance,
and real features have eigenvalues down to ~1e-7 of the largest (MobileNetV2 on sklearn-digits), which float32
(relative error ~6e-8 of the largest eigenvalue) cannot resolve: measured on those features, a float32
eigendecomposition of the Gram matrix lifted the zero eigenvalue (the centring direction) above the 1e-10 rank cut
and put 11 % more one-hot label mass inside it (1,197 vs 1,077.28; float64 agrees with the SVD to 1e-15).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Eigenvalues of the Gram matrix below this fraction of the largest are numerically zero: forming F F^T (or F^T F)
# in float64 leaves absolute errors ~1e-16 * max * sqrt(D), so below ~1e-12 an eigenvalue is rounding noise, and
# real features show a wide gap here (MobileNetV2 / sklearn-digits: 8e-8 then 2e-18; 3,072-D raw pixels of
# sklearn-digits: the same 484 directions above 1e-10 and above 1e-14).
RANK_RTOL = 1e-10


@dataclass(frozen=True)
class GramSpectrum:
    """F^T F's eigenvalues above the rank cut (`sigma`, (k,)), the coordinates U_k^T B of the label block (k, m),
    the squared norms of B's columns (m,), `rank_deficit` = D - k (eigenvalues counted as zero), and
    `gram_frobenius2` = |F^T F|_F^2 = the sum of all squared eigenvalues (what Ledoit-Wolf's shrinkage needs)."""

    sigma: np.ndarray
    coords: np.ndarray
    block_norms2: np.ndarray
    rank_deficit: int
    gram_frobenius2: float

    @property
    def residual(self) -> np.ndarray:
        """|b|^2 - |U_k^T b|^2 per column of B: the part of each label vector outside F's column space."""
        return np.maximum(self.block_norms2 - (self.coords * self.coords).sum(axis=0), 0.0)


def gram_spectrum(F: np.ndarray, B: np.ndarray, rtol: float = RANK_RTOL) -> GramSpectrum:
    """Nonzero spectrum of F^T F and U^T B, from the eigendecomposition of the smaller Gram matrix.

    Example:
        >>> spec = gram_spectrum(features, one_hot)  # features (N, D), one_hot (N, C)
        >>> spec.sigma.shape, spec.coords.shape       # (rank,), (rank, C)
    """
    n, d = F.shape
    if n <= d:
        # For N <= D the left singular vectors come out directly (no division by small singular values).
        lam, U = np.linalg.eigh(F @ F.T)
        keep = lam > lam[-1] * rtol if lam[-1] > 0 else np.zeros(len(lam), bool)
        coords = U[:, keep].T @ B
    else:
        lam, V = np.linalg.eigh(F.T @ F)
        keep = lam > lam[-1] * rtol if lam[-1] > 0 else np.zeros(len(lam), bool)
        coords = (V[:, keep].T @ (F.T @ B)) / np.sqrt(lam[keep])[:, None]
    sigma = lam[keep]
    return GramSpectrum(sigma, coords, (B * B).sum(axis=0), rank_deficit=d - len(sigma),
                        gram_frobenius2=float(np.sum(lam * lam)))
