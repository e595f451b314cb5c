"""The probe contract and the guard that makes selecting anything on test data impossible.

Probes follow scikit-learn's estimator contract (init args stored untouched, `fit` returns self, learned
state ends in `_`) and pass scikit-learn's own `check_estimator` suite (tests/probes/test_sklearn_contract.py):
`fit`, `predict` and `decision_scores` validate their input with scikit-learn's `validate_data`,
`check_classification_targets` and `check_is_fitted`, so bad arrays are refused with scikit-learn's error types
and messages. Hyperparameters are chosen by `select(train, val, metric)`, which sweeps on the val
split only and then refits on train+val. The test split only ever exists as a `SealedSplit`: its arrays are
private, and its one method `evaluate` scores an already-selected probe exactly once. No API takes test
features for fitting or selection, so a protocol cannot peek even by accident.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from unirep.errors import DataError
from unirep.metrics import Metric

if TYPE_CHECKING:
    from omegaconf import DictConfig
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


class ProbeInputError(DataError, ValueError):
    """Input a probe refuses: a unirep DataError (one line from the CLI, exit code 2) and a ValueError, which is
    what scikit-learn's contract expects from `fit` and `predict` (bad arrays, a single class, multi-label
    targets)."""


@contextmanager
def sklearn_refusals_as_data_errors() -> Iterator[None]:
    """scikit-learn's own refusals (the ValueErrors of `validate_data` and `check_classification_targets`, with
    their messages) re-raised as ProbeInputError: still a ValueError for scikit-learn code, and one line (its
    messages span several) for unirep's CLI. TypeErrors (sparse or non-numeric input) pass unchanged, as does
    NotFittedError, which is raised outside this block."""
    try:
        yield
    except ProbeInputError:
        raise
    except ValueError as error:
        raise ProbeInputError(" ".join(str(error).split())) from error


def refuse_multilabel_targets(y: object, where: str) -> None:
    """Single-label probes take (N,) class labels; an (N, 1) column is raveled by `validate_data` (with
    scikit-learn's DataConversionWarning), but (N, C) indicator targets belong to the multi-label probe."""
    shape = np.asarray(y).shape  # asarray, not np.shape: array-likes such as pandas columns convert first
    if len(shape) == 2 and shape[1] > 1:
        raise ProbeInputError(f"{where} needs (N,) class labels, got targets of shape {shape}; multi-label (N, C) "
                              "targets go to the 'linear-multilabel' probe")


class Probe(ClassifierMixin, BaseEstimator):
    """Base class of single-label probes.

    Subclasses implement `_decision_scores(X)` (on validated features), `_fit(X, y, params, warm_start)` (fit
    with explicit hyperparameters), `_init_params()` (the hyperparameters `fit` uses: the init args) and
    `_sweep(train, val, metric)` (every candidate's val score, in tie-break order). `select` is shared so every
    probe chooses the same way: the best val score wins and ties go to the earliest candidate (the most
    regularised one). Probes with another selection rule (e.g. multi-label) override `fit` and `select` directly.
    """

    swept_param: str = ""  # the hyperparameter the val sweep varies; keys of `sweep_`
    # scikit-learn estimator checks that cannot apply to this probe, each with why (check name -> reason). The
    # installed scikit-learn (>= 1.6) has no tag for this; its check_estimator / parametrize_with_checks take
    # them as `expected_failed_checks` (tests/probes/test_sklearn_contract.py). Single-label probes pass them all.
    sklearn_expected_failed_checks: ClassVar[dict[str, str]] = {}
    # A registered probe gets the protocols `<probe>`, `<probe>-<k>shot` and `<probe>-1k` (unirep.protocols,
    # unirep.fewshot), built with `settings_from_config`; False for a probe reached through another's protocol.
    has_protocols: ClassVar[bool] = True
    # The registered probe that the `<probe>` protocol runs instead on multi-label tasks (scored by a ranking
    # metric such as mAP), given the settings its constructor takes; None: this probe itself.
    multilabel_probe: ClassVar[str | None] = None

    @classmethod
    def settings_from_config(cls, cfg: DictConfig, fallback: bool = False) -> dict[str, Any]:
        """Constructor arguments for this probe's protocols, read from the run config (the probe's own section).

        `fallback`: the setting for a low-data subset with no val part to select on (1-shot); its sweep must have
        a single candidate, which is then the recorded choice. Default: no arguments (the constructor defaults).
        """
        return {}

    def fit(self, X: np.ndarray, y: np.ndarray) -> Probe:
        """Fit with the init-arg hyperparameters (no selection); `select` is the protocol's entry point."""
        self._forget_selection()  # a plain fit after select must not look selected to SealedSplit.evaluate
        X, y = self._validate_fit_data(X, y)
        return self._fit(X, y, self._init_params(), None)

    def decision_scores(self, X: np.ndarray) -> np.ndarray:
        """(N, C) class scores; argmax is the prediction."""
        return self._decision_scores(self._validate_query(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        scores = self.decision_scores(X)  # first: it raises NotFittedError before classes_ exists
        return self.classes_[np.argmax(scores, axis=1)]

    def select(self, train: FeatureSplit, val: FeatureSplit, metric: Metric) -> Probe:
        """Choose hyperparameters on `val` only, then refit on train+val. Sets `selected_params_`,
        `val_score_` (the best val score) and `sweep_` (every candidate's val score, keyed by `swept_param`).

        Ties go to the earliest candidate of the sweep, which each probe orders from the most regularised
        (smallest C, smallest k) up, so a flat val curve never picks the least regularised setting.
        """
        _require_feature_split(train, "train")
        _require_feature_split(val, "val")
        metric = Metric(metric)
        _check_same_dims(train.X, val.X)
        _check_val_classes(train.y, val.y)
        self._forget_selection()
        # Validated before the sweep, so bad labels fail before any work; the refit uses these arrays.
        both = self._validate_fit_data(np.concatenate([train.X, val.X]), np.concatenate([train.y, val.y]))
        points = self._sweep(train, val, metric)
        best = max(points, key=lambda point: point.score)  # max keeps the first of equal scores
        self._fit(*both, best.params, best.warm_start)
        self.sweep_ = {point.params[self.swept_param]: point.score for point in points}
        self.val_score_ = best.score
        self.selected_params_ = dict(best.params)  # set last: a failed refit leaves the probe unselected
        return self

    def _validate_fit_data(self, X: object, y: object) -> tuple[np.ndarray, np.ndarray]:
        """scikit-learn's checks of fitting data (2-D numeric finite X, matching 1-D class labels); sets
        `n_features_in_`. dtype="numeric" keeps float32/float64 features as they are (no copy)."""
        refuse_multilabel_targets(y, type(self).__name__)
        with sklearn_refusals_as_data_errors():
            X, y = validate_data(self, X, y, dtype="numeric")
            check_classification_targets(y)
        return X, y

    def _validate_query(self, X: object) -> np.ndarray:
        """Features to score: the probe must be fitted and `X` must have the fitted number of features."""
        check_is_fitted(self)
        with sklearn_refusals_as_data_errors():
            return validate_data(self, X, reset=False, dtype="numeric")

    @property
    def is_selected(self) -> bool:
        return hasattr(self, "selected_params_")

    def _forget_selection(self) -> None:
        for name in ("selected_params_", "val_score_", "sweep_"):
            self.__dict__.pop(name, None)

    def _decision_scores(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

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


def _check_same_dims(train_X: np.ndarray, val_X: np.ndarray) -> None:
    if np.ndim(train_X) != 2 or np.shape(train_X)[1:] != np.shape(val_X)[1:]:
        raise DataError(f"train features have shape {np.shape(train_X)} but val features {np.shape(val_X)}: "
                        "select needs (N, D) features with the same D, from one backbone")


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
