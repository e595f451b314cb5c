"""Weighted k-nearest-neighbour probe (DINO, Caron et al. 2021): cosine similarity through a faiss inner-product
index on L2-normalised features; each of the k nearest training examples votes for its class with weight
exp(sim / T). k is chosen on val from a candidate list, then the index is rebuilt on train+val.

The val sweep searches once for the largest candidate k and scores every smaller k from prefixes of that
neighbour list, so choosing among 8 values of k costs one search.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from unirep.errors import ConfigError
from unirep.metrics import Metric
from unirep.probes import register_probe
from unirep.probes.base import FeatureSplit, Probe, SweepPoint, predictions_for_metric

if TYPE_CHECKING:
    from omegaconf import DictConfig

DEFAULT_KS = (1, 3, 5, 10, 20, 50, 100, 200)


@register_probe("knn")
class KNNProbe(Probe):
    """Cosine kNN with DINO's exp(sim / T) weighted vote.

    Args:
        k: neighbours used by `fit` (`select` chooses its own from `ks`).
        ks: candidates `select` scores on val; values above the number of training examples are capped to it.
            Ties go to the smaller k.
        temperature: T of the vote weights exp(sim / T); DINO uses 0.07.
        batch_size: query rows per faiss search (bounds the (rows, k) neighbour arrays).
    """

    swept_param = "k"

    @classmethod
    def settings_from_config(cls, cfg: DictConfig, fallback: bool = False) -> dict[str, Any]:
        """The `knn` section: candidate ks and temperature; 1-shot uses the one k `fewshot.fallback_k`."""
        ks = [cfg.fewshot.fallback_k] if fallback else list(cfg.knn.ks)
        return {"ks": ks, "temperature": cfg.knn.temperature}

    def __init__(
        self, k: int = 20, ks: Sequence[int] = DEFAULT_KS, temperature: float = 0.07, batch_size: int = 16384
    ):
        self.k = k
        self.ks = ks
        self.temperature = temperature
        self.batch_size = batch_size

    def _decision_scores(self, X: np.ndarray) -> np.ndarray:
        """(N, classes) sums of exp(sim / T) over the k nearest training examples of each class."""
        sims, neighbours = self._search(X, self.k_)
        _, votes = next(_vote_sums(sims, self.labels_[neighbours], len(self.classes_), self.T_, [self.k_]))
        return votes

    def _init_params(self) -> dict:
        return {"k": int(self.k), "T": float(self.temperature)}

    def _fit(self, X: np.ndarray, y: np.ndarray, params: dict, warm_start: object = None) -> KNNProbe:
        self._check_settings(params["k"], params["T"])
        self._build_index(X, y)
        self.k_ = min(int(params["k"]), len(self.labels_))
        self.T_ = float(params["T"])
        return self

    def _sweep(self, train: FeatureSplit, val: FeatureSplit, metric: Metric) -> list[SweepPoint]:
        self._check_settings(1, self.temperature)  # validates ks and T before any work
        candidates = sorted({min(int(k), len(train.y)) for k in self.ks})
        self._build_index(train.X, train.y)
        sims, neighbours = self._search(val.X, candidates[-1])
        points = []
        for k, votes in _vote_sums(sims, self.labels_[neighbours], len(self.classes_), self.temperature, candidates):
            score = float(metric(val.y, predictions_for_metric(metric, votes, self.classes_)))
            points.append(SweepPoint({"k": k, "T": float(self.temperature)}, score))
        return points

    def _build_index(self, X: np.ndarray, y: np.ndarray) -> None:
        X = _normalised(X)
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        self.labels_ = np.searchsorted(self.classes_, y)
        self.index_ = faiss.IndexFlatIP(X.shape[1])
        self.index_.add(X)

    def _search(self, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Similarities and positions of the k nearest indexed examples, nearest first. `X` is validated (2-D,
        finite, as many features as the index): by `validate_data` in predict, by `select` for the val split."""
        X = _normalised(X)
        parts = [self.index_.search(X[i : i + self.batch_size], k) for i in range(0, len(X), self.batch_size)]
        if not parts:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _check_settings(self, k: int, temperature: float) -> None:
        if len(self.ks) == 0 or any(int(c) < 1 for c in self.ks):
            raise ConfigError(f"kNN probe ks must be a non-empty list of positive integers, got {self.ks!r}")
        if int(k) < 1:
            raise ConfigError(f"kNN probe k must be a positive integer, got {k!r}")
        if not temperature > 0:
            raise ConfigError(f"kNN probe temperature must be > 0 (DINO uses 0.07), got {temperature!r}")


def _normalised(X: np.ndarray) -> np.ndarray:
    """Rows of validated (N, D) features scaled to unit L2 norm (float32, as faiss needs); all-zero rows stay
    zero (similarity 0)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return np.ascontiguousarray(X / np.maximum(norms, np.finfo(np.float32).tiny))


def _vote_sums(
    sims: np.ndarray, neighbour_labels: np.ndarray, n_classes: int, temperature: float, ks: Sequence[int]
) -> Iterator[tuple[int, np.ndarray]]:
    """For each k in ascending `ks`, the (N, classes) vote sums of the first k neighbours.

    Weights are computed in float64: exp(1 / 0.07) ~ 1.6e6 is fine in float32, but a smaller T overflows it.
    """
    weights = np.exp(sims.astype(np.float64) / temperature)
    votes = np.zeros((len(sims), n_classes))
    rows = np.arange(len(sims))
    done = 0
    for k in ks:
        for column in range(done, k):
            votes[rows, neighbour_labels[:, column]] += weights[:, column]  # each row once per column: no clash
        done = k
        yield k, votes.copy()


__all__ = ["DEFAULT_KS", "KNNProbe"]
