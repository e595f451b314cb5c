"""COCO mAP through torchmetrics equals plain pycocotools COCOeval on the same, non-trivial predictions (jittered
boxes, false positives, missed objects, a class predicted but absent from the ground truth)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from coco_reference import cocoeval_stats

from unirep.detection.metrics import detection_map

NUM_CLASSES = 4


def make_case(seed: int = 0, images: int = 12):
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(images):
        n = int(rng.integers(0, 5))
        xy = rng.uniform(0, 90, size=(n, 2))
        wh = rng.uniform(8, 40, size=(n, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.integers(0, NUM_CLASSES - 1, size=n)  # class 3 never in the ground truth
        keep = rng.random(n) > 0.25  # about a quarter missed
        jitter = rng.normal(0, 3.0, size=(n, 4))
        p_boxes = (boxes + jitter)[keep]
        p_labels = np.where(rng.random(n) < 0.1, (labels + 1) % NUM_CLASSES, labels)[keep]
        fp = int(rng.integers(0, 3))  # false positives anywhere, any class
        fxy = rng.uniform(0, 90, size=(fp, 2))
        p_boxes = np.concatenate([p_boxes, np.concatenate([fxy, fxy + rng.uniform(8, 30, size=(fp, 2))], 1)])
        p_labels = np.concatenate([p_labels, rng.integers(0, NUM_CLASSES, size=fp)])
        scores = rng.uniform(0.05, 1.0, size=len(p_labels))
        preds.append({"boxes": torch.tensor(p_boxes, dtype=torch.float32), "scores": torch.tensor(scores).float(),
                      "labels": torch.tensor(p_labels, dtype=torch.int64)})
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                        "labels": torch.tensor(labels, dtype=torch.int64)})
    return preds, targets


@pytest.mark.parametrize("seed", [0, 1])
def test_map_equals_plain_cocoeval(seed):
    preds, targets = make_case(seed)
    ours = detection_map(preds, targets, NUM_CLASSES)
    ref_map, ref_50 = cocoeval_stats(preds, targets, num_classes=NUM_CLASSES)
    assert 0.1 < ref_map < 0.9  # non-trivial
    assert ours["map"] == pytest.approx(ref_map, abs=1e-6)
    assert ours["map_50"] == pytest.approx(ref_50, abs=1e-6)
    for c in range(NUM_CLASSES - 1):
        c_map, c_50 = cocoeval_stats(preds, targets, cat_ids=[c], num_classes=NUM_CLASSES)
        assert ours["per_class"][str(c)]["map"] == pytest.approx(c_map, abs=1e-6)
        assert ours["per_class"][str(c)]["map_50"] == pytest.approx(c_50, abs=1e-6)
    assert ours["per_class"]["3"] == {"map": None, "map_50": None}  # no ground truth: not scored


def test_perfect_predictions_score_one():
    _, targets = make_case(2)
    preds = [{**t, "scores": torch.ones(len(t["labels"]))} for t in targets]
    assert detection_map(preds, targets, NUM_CLASSES)["map"] == pytest.approx(1.0)
