"""Task metrics, as an Enum so records and cards name them one way. Scores are percentages (0-100):
NRG/mNRG take s_max = 100 as the perfect score (shared/PROTOCOLS.md)."""

from __future__ import annotations

from enum import Enum

import numpy as np


class Metric(str, Enum):
    TOP1 = "top1"
    MEAN_PER_CLASS = "mean_per_class"

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return METRIC_FUNCTIONS[self](np.asarray(y_true), np.asarray(y_pred))


def top1_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return 100.0 * float(np.mean(y_true == y_pred))


def mean_per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over the classes present in y_true of each class's recall (Kornblith et al. for Pets, Flowers...)."""
    classes = np.unique(y_true)
    return 100.0 * float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


METRIC_FUNCTIONS = {Metric.TOP1: top1_accuracy, Metric.MEAN_PER_CLASS: mean_per_class_accuracy}
