"""Multi-label mAP metrics: 'map' (scikit-learn's average precision, macro over classes) and 'map_voc07'
(the VOC2007 devkit's 11-point interpolated AP), checked against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from unirep.errors import DataError
from unirep.metrics import Metric


def devkit_voc07_ap(targets: np.ndarray, scores: np.ndarray) -> float:
    """VOC2007 devkit (VOCevalcls.m / voc_ap(use_07_metric=True)), written out with explicit loops."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    tp = fp = 0
    recall, precision = [], []
    positives = int(np.sum(targets == 1))
    for i in order:
        if targets[i] == 1:
            tp += 1
        else:
            fp += 1
        recall.append(tp / positives)
        precision.append(tp / (tp + fp))
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        reached = [p for r, p in zip(recall, precision, strict=True) if r >= t]
        ap += (max(reached) if reached else 0.0) / 11
    return ap


def random_problem(seed: int, n: int = 60, c: int = 5):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.3).astype(np.int8)
    y[0] = 1  # every class has a positive
    scores = y + rng.normal(scale=0.8, size=(n, c))
    return y, scores


def test_needs_scores_only_for_the_map_metrics():
    assert Metric.MAP.needs_scores and Metric.MAP_VOC07.needs_scores
    assert not Metric.TOP1.needs_scores and not Metric.MEAN_PER_CLASS.needs_scores
    assert Metric("map_voc07") is Metric.MAP_VOC07


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_is_sklearn_macro_average_precision(seed):
    y, scores = random_problem(seed)
    assert Metric.MAP(y, scores) == pytest.approx(100 * average_precision_score(y, scores, average="macro"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_voc07_matches_the_devkit(seed):
    y, scores = random_problem(seed)
    expected = np.mean([devkit_voc07_ap(y[:, c], scores[:, c]) for c in range(y.shape[1])])
    assert Metric.MAP_VOC07(y, scores) == pytest.approx(100 * expected)


def test_map_voc07_by_hand():
    # ranking: positive, negative, positive, negative -> precision 1 up to recall 0.5, 2/3 up to recall 1
    y = np.array([[1], [0], [1], [0]])
    scores = np.array([[0.9], [0.8], [0.7], [0.1]])
    assert Metric.MAP_VOC07(y, scores) == pytest.approx(100 * (6 * 1 + 5 * 2 / 3) / 11)
    assert Metric.MAP(y, scores) == pytest.approx(100 * (0.5 * 1 + 0.5 * 2 / 3))


def test_ignored_entries_and_classes_without_positives_are_left_out():
    y, scores = random_problem(3)
    y_ignored = y.copy()
    y_ignored[5:10, 1] = -1  # VOC 'difficult' only
    y_ignored[:, 4] = 0  # a class with no positive in this split
    kept = np.arange(len(y)) >= 0
    kept[5:10] = False
    per_class = [average_precision_score(y[:, 0], scores[:, 0]),
                 average_precision_score(y[kept, 1], scores[kept, 1]),
                 average_precision_score(y[:, 2], scores[:, 2]),
                 average_precision_score(y[:, 3], scores[:, 3])]
    assert Metric.MAP(y_ignored, scores) == pytest.approx(100 * np.mean(per_class))


def test_bad_inputs_raise_one_line():
    with pytest.raises(DataError, match=r"\(N, C\) targets"):
        Metric.MAP(np.array([0, 1, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(DataError, match="must be 1"):
        Metric.MAP_VOC07(np.array([[2, 0]]), np.array([[0.1, 0.2]]))
    with pytest.raises(DataError, match="no class has a positive"):
        Metric.MAP(np.zeros((3, 2)), np.zeros((3, 2)))
