"""The probe contract and the guard that makes selecting anything on test data impossible.

Probes follow scikit-learn's estimator contract (init args stored untouched, `fit` returns self, learned
state ends in `_`). Hyperparameters are chosen by `select(train, val, metric)`, which sweeps on the val
split only and then refits on train+val. The test split only ever exists as a `SealedSplit`: its arrays are
private, and its one method `evaluate` scores an already-selected probe exactly once. No API takes test
features for fitting or selection, so a protocol cannot peek even by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.base import BaseEstimator

from unirep.errors import DataError
from unirep.metrics import Metric


@dataclass
class FeatureSplit:
    """Features (N, D) float32 and integer labels (N,) of the train or val split."""

    X: np.ndarray
    y: np.ndarray

    def __post_init__(self):
        if isinstance(self.X, SealedSplit) or isinstance(self.y, SealedSplit):
            raise TypeError("a sealed test split cannot be used as train/val data")
        check_features(self.X, "features")
        if len(self.X) != len(self.y):
            raise DataError(f"{len(self.X)} feature rows but {len(self.y)} labels")


def check_features(X: np.ndarray, where: str) -> None:
    if not np.all(np.isfinite(X)):
        bad = int(np.sum(~np.isfinite(X).all(axis=1)))
        raise DataError(
            f"{where}: {bad} row(s) contain NaN/Inf; the backbone produced non-finite features "
            "(try without --amp/bf16, or check the weights)"
        )


class Probe(BaseEstimator):
    """Base class. Subclasses implement `fit`, `decision_scores`, `_candidates` and `_with_params`."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> Probe:  # pragma: no cover - abstract
        raise NotImplementedError

    def decision_scores(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """(N, C) class scores; argmax is the prediction."""
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_scores(X), axis=1)]

    def select(self, train: FeatureSplit, val: FeatureSplit, metric: Metric) -> Probe:
        """Choose hyperparameters on `val` only, then refit on train+val. Sets `selected_params_`,
        `val_score_` (the best val score) and `sweep_` (every candidate's val score)."""
        raise NotImplementedError

    @property
    def is_selected(self) -> bool:
        return hasattr(self, "selected_params_")


class SealedSplit:
    """The test split. Nothing reads its data except `evaluate`, once, on a probe already selected."""

    def __init__(self, X: np.ndarray, y: np.ndarray):
        check_features(X, "test features")
        self.__X = X
        self.__y = np.asarray(y)
        self._evaluated = False

    def __len__(self) -> int:
        return len(self.__y)

    def __array__(self, *args, **kwargs):
        raise TypeError("the test split is sealed: only SealedSplit.evaluate(probe, metric) may read it")

    def evaluate(self, probe: Probe, metric: Metric) -> TestOutcome:
        if not probe.is_selected:
            raise RuntimeError("select hyperparameters on the val split (probe.select) before scoring on test")
        if self._evaluated:
            raise RuntimeError("this test split was already scored once; build a new run instead of re-scoring")
        self._evaluated = True
        predictions = probe.predict(self.__X)
        return TestOutcome(score=metric(self.__y, predictions), predictions=predictions, labels=self.__y.copy())


@dataclass
class TestOutcome:
    __test__ = False  # not a pytest class

    score: float
    predictions: np.ndarray
    labels: np.ndarray
    extra: dict = field(default_factory=dict)
