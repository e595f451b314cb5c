"""Task metrics, as an Enum so records and cards name them one way. Scores are percentages (0-100):
NRG/mNRG take s_max = 100 as the perfect score (shared/PROTOCOLS.md)."""

from __future__ import annotations

from enum import StrEnum

import numpy as np
from sklearn.metrics import average_precision_score

from unirep.errors import DataError


class Metric(StrEnum):
    TOP1 = "top1"
    MEAN_PER_CLASS = "mean_per_class"
    MAP = "map"  # multi-label: mean over classes of sklearn's (non-interpolated) average precision
    MAP_VOC07 = "map_voc07"  # multi-label: mean over classes of the VOC2007 devkit's 11-point interpolated AP
    COCO_MAP = "coco_map"  # detection: COCO box mAP@[.5:.95] (unirep.detection.metrics; scores are target dicts)

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        """Score in percent. Label metrics take predicted labels; `needs_scores` metrics take (N, C) scores."""
        return METRIC_FUNCTIONS[self](np.asarray(y_true), np.asarray(y_pred))

    @property
    def needs_scores(self) -> bool:
        """True when the metric ranks (N, C) decision scores (multi-label mAP) instead of comparing labels."""
        return self in SCORE_METRICS


def top1_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return 100.0 * float(np.mean(y_true == y_pred))


def mean_per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over the classes present in y_true of each class's recall (Kornblith et al. for Pets, Flowers...)."""
    classes = np.unique(y_true)
    return 100.0 * float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


def _check_multilabel(y_true: np.ndarray, scores: np.ndarray) -> None:
    if y_true.ndim != 2 or y_true.shape != scores.shape:
        raise DataError(f"mAP needs (N, C) targets and (N, C) scores of one shape, got {y_true.shape} and "
                        f"{scores.shape}; score multi-label tasks with the probe's decision_scores")
    if not np.isin(y_true, (-1, 0, 1)).all():
        raise DataError("multi-label targets must be 1 (positive), 0 (negative) or -1 (ignored, e.g. VOC "
                        "'difficult'-only)")


def _per_class_ap(y_true: np.ndarray, scores: np.ndarray, ap_of_class) -> float:
    """Mean over classes with at least one positive of `ap_of_class(targets, scores)`; -1 entries are left
    out of that class's ranking (the VOC devkit ignores 'difficult' images the same way)."""
    _check_multilabel(y_true, scores)
    aps = []
    for c in range(y_true.shape[1]):
        keep = y_true[:, c] >= 0
        targets = y_true[keep, c]
        if targets.sum() > 0:
            aps.append(ap_of_class(targets, scores[keep, c]))
    if not aps:
        raise DataError("mAP is undefined: no class has a positive example")
    return 100.0 * float(np.mean(aps))


def voc07_average_precision(targets: np.ndarray, scores: np.ndarray) -> float:
    """11-point interpolated AP of one class (VOC2007 devkit, `VOCevalcls.m` / `voc_ap(use_07_metric=True)`):
    mean over recall thresholds 0, 0.1, ..., 1 of the best precision reached at or above that recall."""
    order = np.argsort(-scores, kind="stable")  # MATLAB's sort, as the devkit uses, is stable
    hits = targets[order] == 1
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    recall = tp / max(int(hits.sum()), 1)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    points = [precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.linspace(0, 1, 11)]
    return float(np.mean(points))


def mean_average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Macro mean over classes of scikit-learn's average precision (area under the step PR curve)."""
    return _per_class_ap(y_true, scores, average_precision_score)


def mean_average_precision_voc07(y_true: np.ndarray, scores: np.ndarray) -> float:
    return _per_class_ap(y_true, scores, voc07_average_precision)


def coco_box_map(targets: np.ndarray, detections: np.ndarray) -> float:
    """COCO mAP@[.5:.95] in percent of per-image detections ({boxes, scores, labels}) against per-image targets
    ({boxes, labels}); the conventions are unirep.detection.metrics'."""
    from unirep.detection.metrics import detection_map  # deferred: torchmetrics + pycocotools

    labels = [int(v) for item in (*targets, *detections) for v in np.asarray(item["labels"]).reshape(-1)]
    value = detection_map(list(detections), list(targets), num_classes=max(labels, default=0) + 1,
                          per_class=False)["map"]
    return 100.0 * (value or 0.0)


METRIC_FUNCTIONS = {
    Metric.TOP1: top1_accuracy,
    Metric.MEAN_PER_CLASS: mean_per_class_accuracy,
    Metric.MAP: mean_average_precision,
    Metric.MAP_VOC07: mean_average_precision_voc07,
    Metric.COCO_MAP: coco_box_map,
}
SCORE_METRICS = frozenset({Metric.MAP, Metric.MAP_VOC07, Metric.COCO_MAP})
