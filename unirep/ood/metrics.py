"""OoD detection metrics from per-example scores (higher = more in-distribution), in percent.

- **auroc**: area under the ROC curve; the same with either class as positive.
- **aupr_in**: average precision with ID as the positive class, ranked by the score.
- **aupr_out**: average precision with OoD as the positive class, ranked by the negated score.
- **fpr95_id_recall**: the share of OoD examples accepted (score >= t) at the threshold t that keeps 95 % of the ID
  examples (ID positive; most papers' "FPR@95%TPR", e.g. Liang et al. ODIN, Sun et al. ReAct/kNN).
- **fpr95_ood_recall**: the share of ID examples rejected (score <= t) at the threshold that flags 95 % of the OoD
  examples (OoD positive; OpenOOD's and pytorch-ood's FPR95TPR).

Both FPR95 conventions take the first ROC threshold whose recall reaches 95 % (no interpolation), as scikit-learn's
`roc_curve` lists them. Ties count as in scikit-learn: AUROC gives tied pairs one half, AP steps over tied scores as
one threshold. Written over one sort so bootstrap resampling stays cheap; tests check them against scikit-learn and
pytorch-ood.
"""

from __future__ import annotations

import numpy as np

from unirep.errors import DataError

CONVENTIONS = {
    "auroc": "area under the ROC curve, percent",
    "aupr_in": "average precision, ID positive (ranked by the score), percent",
    "aupr_out": "average precision, OoD positive (ranked by the negated score), percent",
    "fpr95_id_recall": "share of OoD accepted at the threshold keeping 95 % of ID (ID positive), percent",
    "fpr95_ood_recall": "share of ID rejected at the threshold flagging 95 % of OoD (OoD positive; OpenOOD, "
                        "pytorch-ood), percent",
}
METRICS = tuple(CONVENTIONS)
RECALL = 0.95


def _curve(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (true positives, false positives) at each distinct threshold, highest score first."""
    scores = np.concatenate([positive, negative])
    is_positive = np.concatenate([np.ones(len(positive), bool), np.zeros(len(negative), bool)])
    order = np.argsort(-scores, kind="mergesort")
    scores, is_positive = scores[order], is_positive[order]
    last_of_each_value = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tps = np.cumsum(is_positive)[last_of_each_value]
    return tps, last_of_each_value + 1 - tps


def _auroc(tps: np.ndarray, fps: np.ndarray) -> float:
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def _average_precision(tps: np.ndarray, fps: np.ndarray) -> float:
    precision = tps / (tps + fps)
    recall_steps = np.diff(np.r_[0, tps]) / tps[-1]
    return float(np.sum(recall_steps * precision))


def _fpr_at_recall(tps: np.ndarray, fps: np.ndarray, recall: float = RECALL) -> float:
    first = int(np.searchsorted(tps / tps[-1], recall, side="left"))
    return float(fps[first] / fps[-1])


def ood_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """Every metric of `CONVENTIONS`, in percent, for one ID set against one OoD set.

    Example:
        >>> ood_metrics(np.array([3.0, 2.0, 1.0]), np.array([0.0, 2.5]))["auroc"]
        66.66...
    """
    id_scores, ood_scores = _checked(id_scores, ood_scores)
    id_tps, id_fps = _curve(id_scores, ood_scores)  # ID positive, ranked by the score
    ood_tps, ood_fps = _curve(-ood_scores, -id_scores)  # OoD positive, ranked by the negated score
    values = {
        "auroc": _auroc(id_tps, id_fps),
        "aupr_in": _average_precision(id_tps, id_fps),
        "aupr_out": _average_precision(ood_tps, ood_fps),
        "fpr95_id_recall": _fpr_at_recall(id_tps, id_fps),
        "fpr95_ood_recall": _fpr_at_recall(ood_tps, ood_fps),
    }
    return {name: 100.0 * value for name, value in values.items()}


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """AUROC in percent (what hyperparameters are chosen by on the validation OoD set)."""
    return 100.0 * _auroc(*_curve(*_checked(id_scores, ood_scores)))


def _checked(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    id_scores, ood_scores = np.asarray(id_scores, np.float64), np.asarray(ood_scores, np.float64)
    if id_scores.ndim != 1 or ood_scores.ndim != 1 or id_scores.size == 0 or ood_scores.size == 0:
        raise DataError(f"OoD metrics need 1-D scores of ID and OoD examples, got shapes {id_scores.shape} and "
                        f"{ood_scores.shape}")
    if not (np.isfinite(id_scores).all() and np.isfinite(ood_scores).all()):
        raise DataError("OoD scores hold NaN/Inf values: the score is undefined on these features")
    return id_scores, ood_scores


def group_means(per_set: dict[str, dict[str, float]], groups: dict[str, str]) -> dict[str, dict[str, float]]:
    """{group: mean of each metric over the sets of that group} (OpenOOD's near / far averages)."""
    out = {}
    for group in dict.fromkeys(groups.values()):
        members = [per_set[name] for name, g in groups.items() if g == group]
        out[group] = {metric: float(np.mean([m[metric] for m in members])) for metric in METRICS}
    return out


__all__ = ["CONVENTIONS", "METRICS", "RECALL", "auroc", "group_means", "ood_metrics"]
