"""The probe contract and the guard that makes selecting anything on test data impossible.

Probes follow scikit-learn's estimator contract (init args stored untouched, `fit` returns self, learned
state ends in `_`). Hyperparameters are chosen by `select(train, val, metric)`, which sweeps on the val
split only and then refits on train+val. The test split only ever exists as a `SealedSplit`: its arrays are
private, and its one method `evaluate` scores an already-selected probe exactly once. No API takes test
features for fitting or selection, so a protocol cannot peek even by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from unirep.errors import DataError
from unirep.metrics import Metric
from unirep.numerics import check_finite


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
    check_finite(X, where)


@dataclass
class SweepPoint:
    """One candidate of a val sweep: its hyperparameters, its val score, and optional solver state (e.g. the
    weights at this C) that the refit on train+val may start from."""

    params: dict
    score: float
    warm_start: Any = None


def check_single_labels(X: np.ndarray, y: np.ndarray, where: str) -> None:
    """(N, D) features with N >= 1 rows and (N,) class labels, as single-label probes need."""
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y) or len(y) == 0:
        raise DataError(f"{where} needs (N, D) features and (N,) class labels, got {X.shape} and {y.shape}; "
                        "multi-label (N, C) targets go to the 'linear-multilabel' probe")


class Probe(BaseEstimator):
    """Base class of single-label probes.

    Subclasses implement `decision_scores`, `_fit(X, y, params, warm_start)` (fit with explicit hyperparameters),
    `_init_params()` (the hyperparameters `fit` uses: the init args) and `_sweep(train, val, metric)` (every
    candidate's val score, in tie-break order). `select` is shared so every probe chooses the same way: the
    best val score wins and ties go to the earliest candidate (the most regularised one). Probes with another
    selection rule (e.g. multi-label) override `fit` and `select` directly.
    """

    swept_param: str = ""  # the hyperparameter the val sweep varies; keys of `sweep_`

    def fit(self, X: np.ndarray, y: np.ndarray) -> Probe:
        """Fit with the init-arg hyperparameters (no selection); `select` is the protocol's entry point."""
        self._forget_selection()  # a plain fit after select must not look selected to SealedSplit.evaluate
        check_features(np.asarray(X), "features passed to fit")
        return self._fit(np.asarray(X), np.asarray(y), self._init_params(), None)

    def decision_scores(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """(N, C) class scores; argmax is the prediction."""
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_scores(X), axis=1)]

    def select(self, train: FeatureSplit, val: FeatureSplit, metric: Metric) -> Probe:
        """Choose hyperparameters on `val` only, then refit on train+val. Sets `selected_params_`,
        `val_score_` (the best val score) and `sweep_` (every candidate's val score, keyed by `swept_param`).

        Ties go to the earliest candidate of the sweep, which each probe orders from the most regularised
        (smallest C, smallest k) up, so a flat val curve never picks the least regularised setting.
        """
        _require_feature_split(train, "train")
        _require_feature_split(val, "val")
        metric = Metric(metric)
        _check_val_classes(train.y, val.y)
        self._forget_selection()
        points = self._sweep(train, val, metric)
        best = max(points, key=lambda point: point.score)  # max keeps the first of equal scores
        both = np.concatenate([train.X, val.X]), np.concatenate([train.y, val.y])
        self._fit(*both, best.params, best.warm_start)
        self.sweep_ = {point.params[self.swept_param]: point.score for point in points}
        self.val_score_ = best.score
        self.selected_params_ = dict(best.params)  # set last: a failed refit leaves the probe unselected
        return self

    @property
    def is_selected(self) -> bool:
        return hasattr(self, "selected_params_")

    def _forget_selection(self) -> None:
        for name in ("selected_params_", "val_score_", "sweep_"):
            self.__dict__.pop(name, None)

    def _init_params(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit(self, X: np.ndarray, y: np.ndarray, params: dict, warm_start: Any) -> Probe:  # pragma: no cover
        raise NotImplementedError

    def _sweep(self, train: FeatureSplit, val: FeatureSplit, metric: Metric) -> list[SweepPoint]:  # pragma: no cover
        raise NotImplementedError


def _require_feature_split(split: object, name: str) -> None:
    if not isinstance(split, FeatureSplit):
        raise TypeError(f"select() takes FeatureSplit {name} data, got {type(split).__name__}; the test split "
                        "is never used for selection")


def _check_val_classes(train_y: np.ndarray, val_y: np.ndarray) -> None:
    unseen = np.setdiff1d(np.unique(val_y), np.unique(train_y))
    if unseen.size:
        raise DataError(f"val split has {unseen.size} class(es) absent from train (e.g. {unseen[:5].tolist()}): "
                        "make the train/val split stratified so every val class has training examples")


def predictions_for_metric(metric: Metric, scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """What `metric` compares with the labels: the (N, C) scores for ranking metrics (mAP), else the
    predicted labels (argmax of the scores)."""
    return scores if metric.needs_scores else classes[np.argmax(scores, axis=1)]


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
        # Ranking metrics (multi-label mAP) score the (N, C) decision scores; the others score labels.
        predictions = probe.decision_scores(self.__X) if metric.needs_scores else probe.predict(self.__X)
        return TestOutcome(score=metric(self.__y, predictions), predictions=predictions, labels=self.__y.copy())


@dataclass
class TestOutcome:
    __test__ = False  # not a pytest class

    score: float
    predictions: np.ndarray
    labels: np.ndarray
    extra: dict = field(default_factory=dict)
