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


def _curve(positive: np.ndarray, negative: np.ndarray, positive_counts: np.ndarray | None = None,
           negative_counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (true positives, false positives) at each distinct threshold, highest score first.

    With counts ((R, n) arrays: how often each example is drawn in each of R resamples), the curves of the R
    weighted sets, shape (R, thresholds); without, each example counts once (shape (thresholds,))."""
    scores = np.concatenate([positive, negative])
    is_positive = np.concatenate([np.ones(len(positive), bool), np.zeros(len(negative), bool)])
    order = np.argsort(-scores, kind="mergesort")
    scores, is_positive = scores[order], is_positive[order]
    last_of_each_value = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    if positive_counts is None:
        tps = np.cumsum(is_positive)[last_of_each_value]
        return tps, last_of_each_value + 1 - tps
    counts = np.concatenate([positive_counts, negative_counts], axis=1)[:, order].astype(np.float64)
    tps = np.cumsum(counts * is_positive, axis=1)[:, last_of_each_value]
    return tps, np.cumsum(counts, axis=1)[:, last_of_each_value] - tps


def _auroc(tps: np.ndarray, fps: np.ndarray) -> np.ndarray:
    tpr = _with_origin(tps / tps[..., -1:])
    fpr = _with_origin(fps / fps[..., -1:])
    return np.sum(np.diff(fpr, axis=-1) * (tpr[..., 1:] + tpr[..., :-1]) / 2, axis=-1)


def _average_precision(tps: np.ndarray, fps: np.ndarray) -> np.ndarray:
    drawn = tps + fps  # 0 only at thresholds whose examples a resample did not draw (no recall step there)
    precision = np.divide(tps, drawn, out=np.zeros_like(tps, dtype=np.float64), where=drawn > 0)
    recall_steps = np.diff(_with_origin(tps), axis=-1) / tps[..., -1:]
    return np.sum(recall_steps * precision, axis=-1)


def _fpr_at_recall(tps: np.ndarray, fps: np.ndarray, recall: float = RECALL) -> np.ndarray:
    first = np.argmax(tps / tps[..., -1:] >= recall, axis=-1)  # the first threshold reaching the recall
    return np.take_along_axis(fps, np.asarray(first)[..., None], axis=-1)[..., 0] / fps[..., -1]


def _with_origin(values: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros(values.shape[:-1] + (1,)), values], axis=-1)


def ood_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """Every metric of `CONVENTIONS`, in percent, for one ID set against one OoD set.

    Example:
        >>> ood_metrics(np.array([3.0, 2.0, 1.0]), np.array([0.0, 2.5]))["auroc"]
        66.66...
    """
    return {name: float(value) for name, value in _metrics(*_checked(id_scores, ood_scores), METRICS).items()}


def resampled_ood_metrics(id_scores: np.ndarray, ood_scores: np.ndarray, id_counts: np.ndarray,
                          ood_counts: np.ndarray, metrics: tuple[str, ...] = METRICS) -> dict[str, np.ndarray]:
    """`metrics` of R resampled versions of the two sets at once, each (R,) in percent: `id_counts` (R, n_id) and
    `ood_counts` (R, n_ood) say how often each example is drawn in each resample (a bootstrap's index rows counted
    with `np.bincount`). Counts of one give `ood_metrics`; ties and thresholds are treated the same way.

    Example:
        >>> resampled_ood_metrics(id_scores, ood_scores, np.ones((1, n_id)), np.ones((1, n_ood)))["auroc"]
    """
    id_scores, ood_scores = _checked(id_scores, ood_scores)
    id_counts, ood_counts = np.atleast_2d(id_counts), np.atleast_2d(ood_counts)
    if id_counts.shape[1:] != id_scores.shape or ood_counts.shape[1:] != ood_scores.shape or (
            len(id_counts) != len(ood_counts)):
        raise DataError(f"resample counts of shapes {id_counts.shape} and {ood_counts.shape} do not match "
                        f"{id_scores.size} ID and {ood_scores.size} OoD scores")
    return _metrics(id_scores, ood_scores, metrics, id_counts, ood_counts)


def _metrics(id_scores, ood_scores, metrics, id_counts=None, ood_counts=None) -> dict[str, np.ndarray]:
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise DataError(f"unknown OoD metric(s) {unknown}: use {', '.join(METRICS)}")
    values = {}
    if {"auroc", "aupr_in", "fpr95_id_recall"} & set(metrics):  # ID positive, ranked by the score
        id_tps, id_fps = _curve(id_scores, ood_scores, id_counts, ood_counts)
        values.update(auroc=lambda: _auroc(id_tps, id_fps), aupr_in=lambda: _average_precision(id_tps, id_fps),
                      fpr95_id_recall=lambda: _fpr_at_recall(id_tps, id_fps))
    if {"aupr_out", "fpr95_ood_recall"} & set(metrics):  # OoD positive, ranked by the negated score
        ood_tps, ood_fps = _curve(-ood_scores, -id_scores, ood_counts, id_counts)
        values.update(aupr_out=lambda: _average_precision(ood_tps, ood_fps),
                      fpr95_ood_recall=lambda: _fpr_at_recall(ood_tps, ood_fps))
    return {name: 100.0 * values[name]() for name in metrics}


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """AUROC in percent (what hyperparameters are chosen by on the validation OoD set)."""
    return float(100.0 * _auroc(*_curve(*_checked(id_scores, ood_scores))))


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


__all__ = ["CONVENTIONS", "METRICS", "RECALL", "auroc", "group_means", "ood_metrics", "resampled_ood_metrics"]
