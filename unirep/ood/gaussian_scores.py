"""Mahalanobis and RMDS: class-conditional Gaussians with one tied covariance, fitted on the ID train features
(shared/PROTOCOLS.md, "Post-hoc OoD detection"). Float64 throughout: the direct-formula tests hold them to 1e-7.

Where the time goes (50,000 x 2,048 train, 20,000 queries, benchmarks/ood_scores.py): one n x D^2 Gram matrix of the
mean-centred features, from which every covariance here follows exactly, and one N x D^2 product per query set.
The tied covariance S is factored once; a quadratic form x' S^+ x is the squared norm of a whitened x, and the
class distances ||z - z_c||^2 follow from z = W x for every class at once. S invertible with margin (the usual case:
more examples than dimensions): Cholesky S = L L', W = L^-1 applied by a triangular solve (half a product's flops,
no eigendecomposition). Otherwise (fewer examples than dimensions, repeated channels) the pseudo-inverse of
np.linalg.pinv(S, hermitian=True), from one eigendecomposition: W = |lambda|^-1/2 V' over the kept eigenvalues,
with their signs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy import sparse
from scipy.linalg import lapack

from unirep.ood.scores import FitData, OodScore, register_score

PINV_RCOND = 1e-15  # np.linalg.pinv's default: every direction the data has is inverted
MIN_RECIPROCAL_CONDITION = 1e-10  # below it (LAPACK's estimate) a covariance takes the pseudo-inverse path
GRAM_ROWS = 4096  # train rows centred in float64 per Gram block: 64 MB at D = 2,048, not a float64 copy of them all


@dataclass
class Whitening:
    """x' S^+ x = sum_k sign_k (W x)_k^2 for one covariance S: `lower` (Cholesky factor L, W = L^-1, signs all +1)
    when S is invertible, else `basis` (W, r x D) and `signs` from the pseudo-inverse's eigendecomposition."""

    lower: np.ndarray | None = None
    basis: np.ndarray | None = None
    signs: np.ndarray | None = None

    @classmethod
    def of(cls, covariance: np.ndarray) -> Whitening:
        try:
            lower = scipy.linalg.cholesky(covariance, lower=True, check_finite=False)
            reciprocal, info = lapack.dpocon(lower, np.abs(covariance).sum(axis=0).max(), uplo="L")
            if info == 0 and reciprocal > MIN_RECIPROCAL_CONDITION:
                return cls(lower=lower)
        except np.linalg.LinAlgError:  # not positive definite: singular, or indefinite by rounding
            pass
        values, vectors = np.linalg.eigh(covariance)
        kept = np.abs(values) > PINV_RCOND * np.abs(values).max()
        basis = (vectors[:, kept] / np.sqrt(np.abs(values[kept]))).T
        return cls(basis=np.ascontiguousarray(basis), signs=np.sign(values[kept]))

    @property
    def invertible(self) -> bool:
        return self.lower is not None

    def apply(self, x: np.ndarray) -> np.ndarray:
        """z = W x for each row x of `x` (N x D float64) -> N x r."""
        if self.lower is not None:
            return scipy.linalg.solve_triangular(self.lower, x.T, lower=True, check_finite=False).T
        return x @ self.basis.T

    def quadratic(self, z: np.ndarray) -> np.ndarray:
        """x' S^+ x per row, from its whitened z."""
        return np.einsum("ij,ij->i", z, z) if self.signs is None else (z * z) @ self.signs

    def cross(self, z: np.ndarray, other: np.ndarray) -> np.ndarray:
        """x' S^+ y for every row pair, from whitened rows z (N x r) and other (K x r) -> N x K."""
        return z @ other.T if self.signs is None else (z * self.signs) @ other.T


def _centred_gram(train: FitData) -> dict:
    """Statistics of the ID train features, computed once per FitData (float64): the mean, the class means as
    offsets from it, the class counts and the Gram matrix G = Xc'Xc of the mean-centred features, accumulated over
    blocks of rows. The tied covariance is G minus the between-class scatter, the global one G itself (over n)."""
    if "centred-gram" not in train.memo:
        features = np.asarray(train.features)
        mean = features.mean(axis=0, dtype=np.float64)
        classes, inverse, counts = np.unique(train.labels, return_inverse=True, return_counts=True)
        gram = np.zeros((features.shape[1], features.shape[1]))
        sums = np.zeros((len(classes), features.shape[1]))
        for start in range(0, len(features), GRAM_ROWS):
            block = features[start : start + GRAM_ROWS].astype(np.float64)
            block -= mean
            gram += block.T @ block  # numpy runs A'A as one symmetric rank-k update (syrk)
            rows = inverse[start : start + GRAM_ROWS]
            sums += sparse.csr_matrix((np.ones(len(rows)), (rows, np.arange(len(rows)))),
                                      shape=(len(classes), len(rows))) @ block
        train.memo["centred-gram"] = {"mean": mean, "offsets": sums / counts[:, None], "counts": counts,
                                      "n": len(features), "gram": gram}
    return train.memo["centred-gram"]


def _tied_whitening(train: FitData) -> Whitening:
    """The tied covariance (class-centred features) factored once, shared by Mahalanobis and RMDS."""
    if "tied-whitening" not in train.memo:
        stats = _centred_gram(train)
        between = (stats["offsets"] * stats["counts"][:, None]).T @ stats["offsets"]
        train.memo["tied-whitening"] = Whitening.of((stats["gram"] - between) / stats["n"])
    return train.memo["tied-whitening"]


class _GaussianScore(OodScore):
    """Class means and one tied covariance of the class-centred ID train features."""

    needs_head = False

    def setup(self, train: FitData) -> _GaussianScore:
        stats = _centred_gram(train)
        self.mean_ = stats["mean"]
        self.whitening_ = _tied_whitening(train)
        self.class_whitened_ = self.whitening_.apply(stats["offsets"])  # the class means, centred, whitened
        return self

    def whiten(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x, z): the features centred on the train mean (float64) and whitened by the tied covariance."""
        x = np.asarray(features, np.float64) - self.mean_
        return x, self.whitening_.apply(x)

    def class_distances(self, z: np.ndarray) -> np.ndarray:
        """(N, K) squared Mahalanobis distances to the class means, expanded around the train mean (where the
        features are centred, so the expansion's three terms are of the size of the distances themselves)."""
        w, means = self.whitening_, self.class_whitened_
        return w.quadratic(z)[:, None] - 2 * w.cross(z, means) + w.quadratic(means)[None, :]


@register_score("mahalanobis", paper="Lee et al., NeurIPS 2018: max over classes of -(f - mu_c)' S^-1 (f - mu_c), "
                "S the tied covariance of class-centred train features (no input preprocessing)")
class Mahalanobis(_GaussianScore):
    def score(self, features, logits):
        return -self.class_distances(self.whiten(features)[1]).min(axis=1)


@register_score("rmds", paper="Ren et al., 2021 (relative Mahalanobis): max over classes of -(d_c(f) - d_0(f)), d_0 "
                "the distance under one Gaussian fitted to all train features")
class RelativeMahalanobis(_GaussianScore):
    """The background covariance S0 = G / n is the tied S plus the between-class scatter U U' (U: the class offsets
    scaled by sqrt(n_c / n), K columns). S invertible: Woodbury, S0^-1 = S^-1 - S^-1 U (I + U' S^-1 U)^-1 U' S^-1,
    so x' S0^-1 x = ||z||^2 - a M a' with a = z' (W U): an N x K product on the z the class distances already need,
    instead of a second factorisation and N x D^2 product. Otherwise S0 is factored on its own (Woodbury does not
    hold for pseudo-inverses)."""

    def setup(self, train: FitData) -> RelativeMahalanobis:
        super().setup(train)
        stats = _centred_gram(train)
        self.woodbury_ = self.whitening_.invertible
        if self.woodbury_:
            self.between_whitened_ = self.class_whitened_ * np.sqrt(stats["counts"] / stats["n"])[:, None]  # (W U)'
            self.core_ = np.linalg.inv(np.eye(len(stats["counts"])) + self.between_whitened_ @ self.between_whitened_.T)
        else:
            self.background_ = Whitening.of(stats["gram"] / stats["n"])
        return self

    def background_distance(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """x' S0^+ x per row (x centred on the train mean, z its tied whitening)."""
        if not self.woodbury_:
            return self.background_.quadratic(self.background_.apply(x))
        along = z @ self.between_whitened_.T
        return self.whitening_.quadratic(z) - np.einsum("ij,ij->i", along @ self.core_, along)

    def score(self, features, logits):
        x, z = self.whiten(features)
        return -(self.class_distances(z) - self.background_distance(x, z)[:, None]).min(axis=1)
