"""Scores that fit statistics of the ID training features: ReAct, ASH, ViM (which also read the head) and the
feature-only kNN; Mahalanobis and RMDS are in unirep.ood.gaussian_scores. Definitions: shared/PROTOCOLS.md
("Post-hoc OoD detection"); each class names its paper."""

from __future__ import annotations

import faiss
import numpy as np
from scipy import sparse
from scipy.special import logsumexp

from unirep.ood.scores import FitData, OodScore, ScoreNotApplicable, register_score

PINV_RCOND = 1e-6  # singular values below this share of the largest count as zero (ViM's origin)


def _energy(logits: np.ndarray) -> np.ndarray:
    return logsumexp(logits, axis=1)


@register_score("react", paper="Sun, Guo & Li, NeurIPS 2021 (ReAct): features clipped at the p-th percentile of ID "
                "train activations, then energy")
class ReActEnergy(OodScore):
    grid = {"percentile": [90, 85, 95, 99]}  # 90: the paper's choice, first so it wins ties

    def setup(self, train: FitData) -> ReActEnergy:
        self.head = train.head
        wanted = sorted({*self.grid["percentile"], self.params["percentile"]})
        if not set(wanted) <= train.memo.get("react", {}).keys():  # one partition: every candidate's threshold
            train.memo["react"] = dict(zip(wanted, _percentiles(train.features, wanted), strict=True))
        self.threshold_ = train.memo["react"][self.params["percentile"]]
        return self

    def score(self, features, logits):
        return _energy(self.head.logits(np.minimum(features, self.threshold_)))


def _percentiles(values: np.ndarray, percentiles: list[float]) -> list[float]:
    """np.percentile's default (linear) rule for several percentiles from one partition of the flattened values
    (np.percentile sorts a copy per call; this is one copy and one introselect for all, in float64 arithmetic)."""
    flat = np.asarray(values).ravel()
    positions = [(flat.size - 1) * q / 100 for q in percentiles]
    below = [int(np.floor(p)) for p in positions]
    above = [min(b + 1, flat.size - 1) for b in below]
    part = np.partition(flat, sorted({*below, *above}))
    return [float(part[b]) + (float(part[a]) - float(part[b])) * (p - b)
            for p, b, a in zip(positions, below, above, strict=True)]


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
        x = np.asarray(features)
        n = x.shape[1]
        keep = max(1, n - int(np.round(n * self.params["percentile"] / 100)))  # at least one (tiny feature sets)
        # The pruned features as a sparse matrix of the kept values (every row keeps exactly `keep`), in float64;
        # the per-example rescaling commutes with the head's product, so it is applied to the logits.
        rows, columns = np.nonzero(_largest_mask(x, keep))
        kept = x[rows, columns].astype(np.float64)
        pruned = sparse.csr_matrix((kept, columns, np.arange(0, kept.size + 1, keep)), shape=x.shape)
        kept_sum = kept.reshape(len(x), keep).sum(axis=1)
        # An all-zero feature vector keeps nothing to rescale (0 / 0): its activations stay as they are.
        scale = np.divide(x.sum(axis=1, dtype=np.float64), kept_sum, out=np.zeros(len(x)), where=kept_sum > 0)
        return _energy(np.asarray(pruned @ self.head.weight.T) * np.exp(scale)[:, None] + self.head.bias)


def _largest_mask(x: np.ndarray, keep: int) -> np.ndarray:
    """(N, D) bool: the `keep` largest entries of each row. Found from each row's keep-th largest value (a partition
    of the values, cheaper than partitioning indices); where entries equal to that value would make more than
    `keep`, the first of them in column order are kept, so every row keeps exactly `keep` (which of equal values is
    kept is arbitrary in any top-k; at a zero threshold it changes nothing, as zeros add nothing)."""
    n = x.shape[1]
    threshold = np.partition(x, n - keep, axis=1)[:, n - keep : n - keep + 1]
    mask = x >= threshold
    excess = mask.sum(axis=1) - keep
    rows = np.flatnonzero(excess)
    if rows.size:  # ties at the threshold: only rows that have them pay for this
        ties = x[rows] == threshold[rows]
        wanted = ties.sum(axis=1) - excess[rows]
        mask[rows] &= ~(ties & (np.cumsum(ties, axis=1) > wanted[:, None]))
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
        # A multinomial head fitted with an L2 penalty has weight rows summing to zero (rank K - 1: adding one vector
        # to every class changes no probability, and the penalty picks the zero-sum solution). Its last singular value
        # is solver noise (~1e-11 of the largest here), which an exact pinv amplifies into the origin; cut it.
        self.origin_ = -np.linalg.pinv(self.head.weight, rcond=PINV_RCOND) @ self.head.bias
        if "vim" not in train.memo:  # one eigendecomposition (and one centred copy) serves every candidate d
            train.memo["vim"] = _second_moment_basis(train.features, self.origin_)
        self.mean_, vectors, centred = train.memo["vim"]
        dim = train.features.shape[1]
        self.dim_ = self.principal_dim(dim)
        self.residual_basis_ = np.ascontiguousarray(vectors[:, : dim - self.dim_], dtype=np.float32)
        self.offset_residual_ = (self.mean_ - self.origin_) @ vectors[:, : dim - self.dim_]
        residual = self.centred_residual_norms(centred)
        self.alpha_ = float(self.head.logits(train.features).max(axis=1).mean() / residual.mean())
        return self

    def residual_norms(self, features: np.ndarray) -> np.ndarray:
        """||R'(f - u)||, R the residual basis: the product in float32 on mean-centred features (its size is the
        features', not the offset's), the offset's part (mean - u)'R added in float64."""
        return self.centred_residual_norms(np.asarray(features, np.float32) - self.mean_.astype(np.float32))

    def centred_residual_norms(self, centred: np.ndarray) -> np.ndarray:
        return np.linalg.norm((centred @ self.residual_basis_).astype(np.float64) + self.offset_residual_, axis=1)

    def principal_dim(self, feature_dim: int) -> int:
        return max(1, min(feature_dim - 1, int(round(self.params["dim_fraction"] * feature_dim))))

    def score(self, features, logits):
        return _energy(self.head.logits(features)) - self.alpha_ * self.residual_norms(features)


def _second_moment_basis(features: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The train mean, the eigenvectors (ascending eigenvalues, float64) of the second moment of f - u, and the
    mean-centred float32 features (every candidate's alpha reads their residual norms). The second moment is
    (X - u)'(X - u) / n = (Xc'Xc + n (mean - u)(mean - u)') / n. Xc'Xc (mean-centred, so float32 keeps the
    small-variance directions ViM's residual lives in) is float32 BLAS, the rank-one term and eigh float64: ViM
    reads a subspace, not a distance, and pytorch-ood's ViM is float32 throughout."""
    x = np.asarray(features, np.float32)
    mean = x.mean(axis=0, dtype=np.float64)
    centred = x - mean.astype(np.float32)
    offset = mean - origin
    moment = ((centred.T @ centred).astype(np.float64) + len(x) * np.outer(offset, offset)) / len(x)
    return mean, np.linalg.eigh(moment)[1], centred


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
