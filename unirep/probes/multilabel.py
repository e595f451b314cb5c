"""One-vs-rest linear probe for multi-label tasks (VOC07, VOC12, NUS-WIDE-Obj): one L2-regularised logistic
regression per class, C chosen on val by mean average precision, then refit on train+val.

This is the protocol of Tamaazousti et al. (one-vs-all linear classifier per class, mAP) with logistic loss
in place of the hinge, matching unirep's multinomial linear probe. The per-class problems share C and are
independent, so they are solved together: the joint objective is a sum of the per-class objectives and its
minimiser is each class's own minimiser. One full-batch L-BFGS solve per C (warm-started along the sweep)
replaces one scikit-learn fit per class; `tests/probes/test_multilabel.py` checks it against scikit-learn.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from unirep.errors import DataError
from unirep.metrics import Metric
from unirep.probes import register_probe
from unirep.probes.base import FeatureSplit, Probe, ProbeInputError, sklearn_refusals_as_data_errors
from unirep.probes.linear import DEFAULT_CS  # Kornblith et al. 2019's grid, as for the multinomial probe

_NOT_INDICATOR = "gives targets with labels other than 1 / 0 / -1 (e.g. {1, 2} or strings)"


def check_targets(y: np.ndarray, n_rows: int) -> np.ndarray:
    """(N, C) targets: 1 positive, 0 negative, -1 ignored (e.g. VOC 'difficult'-only)."""
    y = np.asarray(y)
    # Values first: multi-class labels get scikit-learn's "Only binary classification is supported" refusal
    # (each class column is a binary problem), whatever their shape.
    if not np.isin(y, (-1, 0, 1)).all():
        raise ProbeInputError("Only binary classification is supported per class by the multi-label probe: targets "
                              "must be 1 (positive), 0 (negative) or -1 (ignored); single-label tasks use the "
                              "'linear' probe")
    if y.ndim != 2 or len(y) != n_rows:
        raise ProbeInputError(f"multi-label probe needs (N, C) targets for {n_rows} rows, got shape {y.shape}; "
                              "single-label tasks use the 'linear' probe")
    return y.astype(np.int8)


@register_probe("linear-multilabel")
class MultiLabelLinearProbe(Probe):
    """One-vs-rest L2 logistic regression (scikit-learn's objective per class: C * sum of log-losses +
    0.5 * ||w||^2, intercept not penalised); entries marked -1 are left out of their class's loss.

    Args:
        C: inverse regularisation strength used by `fit`.
        Cs: the grid `select` sweeps on val (default 10^linspace(-6, 5, 45)).
        max_iter: L-BFGS iterations per solve.
        tol: projected-gradient tolerance of L-BFGS on the 1/n-scaled objective (scikit-learn uses 1e-4;
            1e-6 puts the weights within ~1e-5 of the exact optimum).
    """

    # Reached through the `linear` protocol on multi-label tasks (LinearProbe.multilabel_probe); its own
    # `<probe>-<k>shot` would need per-class draws of (N, C) targets, which unirep.fewshot does not make.
    has_protocols = False
    # Checks that presuppose single-output class labels; this probe's targets are (N, C) indicator entries
    # 1 / 0 / -1 (ignored), so a column {1, 2} or strings has no meaning here and (N, C) is what it predicts.
    sklearn_expected_failed_checks: ClassVar[dict[str, str]] = {
        "check_estimators_dtypes": _NOT_INDICATOR,
        "check_classifier_data_not_an_array": _NOT_INDICATOR,
        "check_classifiers_classes": _NOT_INDICATOR,
        "check_fit2d_1feature": _NOT_INDICATOR,
        "check_classifiers_one_label": "fits 1-D labels; the probe needs (N, C) targets, one column per class",
        "check_classifiers_train": "asserts (N,) predictions; the probe predicts (N, C), one column per class",
    }

    def __init__(self, C: float = 1.0, Cs=None, max_iter: int = 1000, tol: float = 1e-6):
        self.C = C
        self.Cs = Cs
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X: np.ndarray, y: np.ndarray) -> MultiLabelLinearProbe:
        self._forget_selection()  # a plain fit after select must not look selected to SealedSplit.evaluate
        X, targets = self._validate_fit_data(X, y)
        self._solve(X, targets, float(self.C), warm=None)
        return self

    def _decision_scores(self, X: np.ndarray) -> np.ndarray:
        """(N, C) per-class logits; a positive value predicts the class present."""
        return np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(N, C) 0/1 predictions (logit > 0), in the dtype of the fitted targets (scikit-learn's convention)."""
        return (self.decision_scores(X) > 0).astype(self.targets_dtype_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # (N, C) indicator targets only: scikit-learn's checks then give it y as an (N, 1) column of 0/1 labels.
        tags.target_tags.single_output = False
        tags.target_tags.multi_output = True
        tags.classifier_tags.multi_label = True
        tags.classifier_tags.multi_class = False  # each column is binary (1 / 0, or -1 for "ignored")
        return tags

    def _validate_fit_data(self, X: object, y: object) -> tuple[np.ndarray, np.ndarray]:
        """scikit-learn's checks of X and of y as (multi-output) class targets, then the probe's own target
        format (N, C) in {1, 0, -1}; sets `n_features_in_`."""
        with sklearn_refusals_as_data_errors():
            X, y = validate_data(self, X, y, dtype="numeric", multi_output=True)
            check_classification_targets(y)
        self.targets_dtype_ = y.dtype
        return X, check_targets(y, len(X))

    def select(self, train: FeatureSplit, val: FeatureSplit, metric: Metric = Metric.MAP) -> MultiLabelLinearProbe:
        """Sweep C (ascending, warm-started) on val by `metric` (an mAP), then refit on train+val."""
        metric = Metric(metric)
        if not metric.needs_scores:
            raise DataError(f"metric {metric.value!r} scores labels; multi-label tasks use 'map' or 'map_voc07'")
        if not isinstance(train, FeatureSplit) or not isinstance(val, FeatureSplit):
            raise TypeError("select() takes FeatureSplit train and val data; the test split never selects")
        self._forget_selection()
        train_y = check_targets(train.y, len(train.X))
        val_y = check_targets(val.y, len(val.X))
        Cs = np.sort(np.asarray(DEFAULT_CS if self.Cs is None else self.Cs, dtype=np.float64))
        sweep: dict[float, float] = {}
        solutions: dict[float, np.ndarray] = {}
        warm = None
        for C in Cs:
            warm = solutions[float(C)] = self._solve(train.X, train_y, float(C), warm)
            sweep[float(C)] = float(metric(val_y, self.decision_scores(val.X)))
        # Ties go to the smallest C (strongest regularisation) so the choice does not hinge on noise.
        best_C = max(sweep, key=lambda c: (sweep[c], -c))
        X_all, y_all = self._validate_fit_data(np.concatenate([train.X, val.X]), np.concatenate([train_y, val_y]))
        self._solve(X_all, y_all, best_C, warm=solutions[best_C])  # the train-only solution is a close start
        self.sweep_ = sweep
        self.val_score_ = sweep[best_C]
        self.selected_params_ = {"C": best_C}  # set last: a failed refit leaves the probe unselected
        return self

    def _solve(self, X: np.ndarray, y: np.ndarray, C: float, warm: np.ndarray | None) -> np.ndarray:
        """Minimise sum_c [C * sum_i loss_ic + 0.5 ||w_c||^2] (scaled by 1/n for conditioning; the minimiser is
        unchanged) with scipy's L-BFGS-B; weights are stored (classes, D) so the product is one matmul."""
        features = np.asarray(X, dtype=np.float64)
        signs = np.where(y == 1, 1.0, -1.0)
        weights = (y >= 0).astype(np.float64)
        n, dim = features.shape
        k = y.shape[1]

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            W, b = theta[: k * dim].reshape(k, dim), theta[k * dim:]
            margins = -signs * (features @ W.T + b)
            loss = (weights * np.logaddexp(0.0, margins)).sum() / n + (W**2).sum() / (2 * C * n)
            dz = -(weights * signs * expit(margins)) / n
            grad_W = dz.T @ features + W / (C * n)
            return loss, np.concatenate([grad_W.ravel(), dz.sum(axis=0)])

        start = warm if warm is not None and warm.shape == (k * dim + k,) else np.zeros(k * dim + k)
        result = minimize(objective, start, jac=True, method="L-BFGS-B",
                          options={"maxiter": self.max_iter, "gtol": self.tol, "ftol": 1e-14})
        self.coef_ = result.x[: k * dim].reshape(k, dim)
        self.intercept_ = result.x[k * dim:]
        self.classes_ = np.arange(k)
        self.n_iter_ = int(result.nit)
        return result.x
