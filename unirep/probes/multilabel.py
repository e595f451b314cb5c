"""One-vs-rest linear probe for multi-label tasks (VOC07, VOC12, NUS-WIDE-Obj): one L2-regularised logistic
regression per class, C chosen on val by mean average precision, then refit on train+val.

This is the protocol of Tamaazousti et al. (one-vs-all linear classifier per class, mAP) with logistic loss
in place of the hinge, matching unirep's multinomial linear probe. The per-class problems share C and are
independent, so they are solved together: the joint objective is a sum of the per-class objectives and its
minimiser is each class's own minimiser. One full-batch L-BFGS solve per C (warm-started along the sweep)
replaces one scikit-learn fit per class; `tests/probes/test_multilabel.py` checks it against scikit-learn.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from unirep.errors import DataError
from unirep.metrics import Metric
from unirep.probes import register_probe
from unirep.probes.base import FeatureSplit, Probe, check_features

DEFAULT_CS = np.logspace(-6, 5, 45)  # Kornblith et al. 2019's grid, as for the multinomial probe


def check_targets(y: np.ndarray, n_rows: int) -> np.ndarray:
    """(N, C) targets: 1 positive, 0 negative, -1 ignored (e.g. VOC 'difficult'-only)."""
    y = np.asarray(y)
    if y.ndim != 2 or len(y) != n_rows:
        raise DataError(f"multi-label probe needs (N, C) targets for {n_rows} rows, got shape {y.shape}; "
                        "single-label tasks use the 'linear' probe")
    if not np.isin(y, (-1, 0, 1)).all():
        raise DataError("multi-label targets must be 1 (positive), 0 (negative) or -1 (ignored)")
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

    def __init__(self, C: float = 1.0, Cs=None, max_iter: int = 1000, tol: float = 1e-6):
        self.C = C
        self.Cs = Cs
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X: np.ndarray, y: np.ndarray) -> MultiLabelLinearProbe:
        self._forget_selection()  # a plain fit after select must not look selected to SealedSplit.evaluate
        check_features(X, "train features")
        targets = check_targets(y, len(X))
        self._solve(X, targets, float(self.C), warm=None)
        return self

    def decision_scores(self, X: np.ndarray) -> np.ndarray:
        """(N, C) per-class logits; a positive value predicts the class present."""
        return np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(N, C) 0/1 predictions (logit > 0)."""
        return (self.decision_scores(X) > 0).astype(np.int8)

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
        X_all = np.concatenate([train.X, val.X])
        y_all = np.concatenate([train_y, val_y])
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
