"""Scores that fit statistics of the ID training features: ReAct, ASH, ViM (which also read the head), and the
feature-only Mahalanobis, RMDS and kNN. Definitions: shared/PROTOCOLS.md ("Post-hoc OoD detection"); each class
names its paper. Covariances are inverted in float64 with a pseudo-inverse, since backbone features are often
rank-deficient (raw pixels of grey images repeat one channel three times)."""

from __future__ import annotations

import faiss
import numpy as np
from scipy.special import logsumexp

from unirep.ood.scores import FitData, OodScore, ScoreNotApplicable, register_score

PINV_RCOND = 1e-6  # singular values below this share of the largest count as zero (ViM's origin)


def _energy(logits: np.ndarray) -> np.ndarray:
    return logsumexp(logits, axis=1)


def _pinv_hermitian(matrix: np.ndarray) -> np.ndarray:
    return np.linalg.pinv(matrix, hermitian=True)


@register_score("react", paper="Sun, Guo & Li, NeurIPS 2021 (ReAct): features clipped at the p-th percentile of ID "
                "train activations, then energy")
class ReActEnergy(OodScore):
    grid = {"percentile": [90, 85, 95, 99]}  # 90: the paper's choice, first so it wins ties

    def setup(self, train: FitData) -> ReActEnergy:
        self.head = train.head
        self.threshold_ = float(np.percentile(train.features, self.params["percentile"]))
        return self

    def score(self, features, logits):
        return _energy(self.head.logits(np.minimum(features, self.threshold_)))


@register_score("ash", paper="Djurisic et al., ICLR 2023 (ASH-S): per example, the lowest p % of the activations "
                "are zeroed and the rest scaled by exp(sum before / sum after), then energy; meant for non-negative "
                "(post-ReLU) features")
class ActivationShaping(OodScore):
    grid = {"percentile": [90, 65, 70, 75, 80, 85, 95]}  # 90: the paper's ImageNet choice

    def setup(self, train: FitData) -> ActivationShaping:
        if float(np.min(train.features)) < 0:
            raise ScoreNotApplicable("ASH is defined for non-negative (post-ReLU) features; these have negative "
                                     f"values (min {float(np.min(train.features)):.3g})")
        self.head = train.head
        return self

    def score(self, features, logits):
        x = np.asarray(features, np.float64)
        n = x.shape[1]
        keep = n - int(np.round(n * self.params["percentile"] / 100))
        pruned = np.where(_largest_mask(np.asarray(features), keep), x, 0.0)
        kept_sum = pruned.sum(axis=1)
        # An all-zero feature vector keeps nothing to rescale (0 / 0): its activations stay as they are.
        scale = np.divide(x.sum(axis=1), kept_sum, out=np.zeros(len(x)), where=kept_sum > 0)
        return _energy(self.head.logits(pruned * np.exp(scale)[:, None]))


def _largest_mask(x: np.ndarray, keep: int) -> np.ndarray:
    """(N, D) bool: the `keep` largest entries of each row. Found from each row's keep-th largest value (a partition
    of the values, about twice as fast as partitioning indices); among entries equal to that value, the first in
    column order are kept, so every row keeps exactly `keep` (which of equal values is kept is arbitrary in any
    top-k; at a zero threshold it changes nothing, as zeros add nothing)."""
    threshold = -np.partition(-x, keep - 1, axis=1)[:, keep - 1 : keep]
    mask = x > threshold
    short = keep - mask.sum(axis=1)
    rows = np.flatnonzero(short)
    if rows.size:
        ties = x[rows] == threshold[rows]
        mask[rows] |= ties & (np.cumsum(ties, axis=1) <= short[rows, None])
    return mask


@register_score("vim", paper="Wang et al., CVPR 2022 (ViM): logsumexp(logits) - alpha * ||residual of f - u outside "
                "the top-d principal subspace||, u = -pinv(W) b, alpha = mean max-logit / mean residual norm on ID "
                "train")
class VirtualLogitMatching(OodScore):
    # d as fractions of the feature dimension D: the paper's settings (d = 1000 of 2048, 512 of 768, 300 of 512)
    # lie between D/2 and 3D/4; smaller ones are for small ID training sets.
    grid = {"dim_fraction": [0.5, 0.25, 0.75, 0.125]}

    def setup(self, train: FitData) -> VirtualLogitMatching:
        self.head = train.head
        features = np.asarray(train.features, np.float64)
        # A multinomial head fitted with an L2 penalty has weight rows summing to zero (rank K - 1: adding one vector
        # to every class changes no probability, and the penalty picks the zero-sum solution). Its last singular value
        # is solver noise (~1e-11 of the largest here), which an exact pinv amplifies into the origin; cut it.
        self.origin_ = -np.linalg.pinv(self.head.weight, rcond=PINV_RCOND) @ self.head.bias
        centred = features - self.origin_
        if "vim" not in train.memo:  # one eigendecomposition serves every candidate d
            train.memo["vim"] = np.linalg.eigh(centred.T @ centred / len(centred))[1]  # ascending eigenvalues
        vectors = train.memo["vim"]
        self.dim_ = self.principal_dim(features.shape[1])
        self.residual_basis_ = vectors[:, : features.shape[1] - self.dim_]
        residual = np.linalg.norm(centred @ self.residual_basis_, axis=1)
        self.alpha_ = float(self.head.logits(features).max(axis=1).mean() / residual.mean())
        return self

    def principal_dim(self, feature_dim: int) -> int:
        return max(1, min(feature_dim - 1, int(round(self.params["dim_fraction"] * feature_dim))))

    def score(self, features, logits):
        residual = np.linalg.norm((np.asarray(features, np.float64) - self.origin_) @ self.residual_basis_, axis=1)
        return _energy(self.head.logits(features)) - self.alpha_ * residual


class _GaussianScore(OodScore):
    """Class means and one tied covariance of the class-centred ID train features."""

    needs_head = False

    def setup(self, train: FitData) -> _GaussianScore:
        features = np.asarray(train.features, np.float64)
        classes = np.unique(train.labels)
        self.means_ = np.stack([features[train.labels == c].mean(axis=0) for c in classes])
        centred = features - self.means_[np.searchsorted(classes, train.labels)]
        self.precision_ = _pinv_hermitian(centred.T @ centred / len(features))
        return self

    def class_distances(self, features: np.ndarray) -> np.ndarray:
        """(N, K) squared Mahalanobis distances to the class means."""
        x = np.asarray(features, np.float64)
        projected = x @ self.precision_
        mean_projected = self.means_ @ self.precision_
        return ((projected * x).sum(axis=1)[:, None] - 2 * x @ mean_projected.T
                + (mean_projected * self.means_).sum(axis=1)[None, :])


@register_score("mahalanobis", paper="Lee et al., NeurIPS 2018: max over classes of -(f - mu_c)' S^-1 (f - mu_c), "
                "S the tied covariance of class-centred train features (no input preprocessing)")
class Mahalanobis(_GaussianScore):
    def score(self, features, logits):
        return -self.class_distances(features).min(axis=1)


@register_score("rmds", paper="Ren et al., 2021 (relative Mahalanobis): max over classes of -(d_c(f) - d_0(f)), d_0 "
                "the distance under one Gaussian fitted to all train features")
class RelativeMahalanobis(_GaussianScore):
    def setup(self, train: FitData) -> RelativeMahalanobis:
        super().setup(train)
        features = np.asarray(train.features, np.float64)
        self.global_mean_ = features.mean(axis=0)
        centred = features - self.global_mean_
        self.global_precision_ = _pinv_hermitian(centred.T @ centred / len(features))
        return self

    def score(self, features, logits):
        centred = np.asarray(features, np.float64) - self.global_mean_
        background = ((centred @ self.global_precision_) * centred).sum(axis=1)
        return -(self.class_distances(features) - background[:, None]).min(axis=1)


@register_score("knn", paper="Sun et al., ICML 2022 (deep nearest neighbours): -distance of the L2-normalised "
                "feature to its k-th nearest L2-normalised ID train feature (faiss, exact)")
class NearestNeighbourDistance(OodScore):
    needs_head = False
    grid = {"k": [50, 1, 5, 10, 20, 100, 200]}  # 50: the paper's CIFAR choice, first so it wins ties

    @classmethod
    def valid_values(cls, key, values, train):
        return [k for k in values if k <= len(train.features)]

    def setup(self, train: FitData) -> NearestNeighbourDistance:
        bank = _unit_rows(train.features)
        self.index_ = faiss.IndexFlatL2(bank.shape[1])
        self.index_.add(bank)
        return self

    def score(self, features, logits):
        squared, _ = self.index_.search(_unit_rows(features), self.params["k"])
        return -np.sqrt(np.maximum(squared[:, -1].astype(np.float64), 0.0))


def _unit_rows(features: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(features, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
