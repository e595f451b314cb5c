"""COCO box mAP through torchmetrics' `MeanAveragePrecision` with its pycocotools backend (COCOeval itself).

Conventions (COCOeval's defaults, which torchmetrics passes through; recorded in every detection record):
- `map`: mean over IoU thresholds 0.50:0.05:0.95 and over classes of AP; `map_50`: the same at IoU 0.5 alone;
- AP is COCO's 101-point interpolated precision (recall thresholds 0:0.01:1, precision made monotone from the
  right, then read at each threshold), not VOC's 11-point nor the area under the raw curve;
- at most 100 detections per image (highest scores), area range "all" (the small / medium / large numbers use
  COCO's 32^2 and 96^2 px^2 limits on the box area); boxes xyxy in pixels, no crowd regions;
- a class without any ground truth box in the split is left out of the mean (COCOeval's -1), and per class it
  reads None;
- scores are fractions (0..1) here, as COCO prints them; the protocol records percent (x100) like every metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from unirep.errors import DataError

# COCOeval's own thresholds, in float64. torchmetrics' defaults are float32 linspaces (0.55 -> 0.55000001): a recall of
# exactly 0.3 then falls below the 0.3 threshold and AP moves (by 7e-4 mAP on tests/detection/test_metrics.py's case).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, round((0.95 - 0.5) / 0.05) + 1).tolist()
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, round(1.00 / 0.01) + 1).tolist()

CONVENTIONS = {
    "backend": "torchmetrics.detection.MeanAveragePrecision (pycocotools COCOeval)",
    "iou_type": "bbox",
    "box_format": "xyxy pixels",
    "iou_thresholds": "0.50:0.05:0.95 (map), 0.50 (map_50)",
    "interpolation": "COCO 101-point (recall 0:0.01:1)",
    "thresholds_dtype": "float64, COCOeval's own (torchmetrics' float32 defaults shift them by ~1e-8)",
    "max_detections_per_image": 100,
    "area_range": "all (small < 32^2 <= medium < 96^2 <= large px^2)",
    "classes_without_ground_truth": "left out of the mean",
}


def _check(predictions: Sequence[dict], targets: Sequence[dict], num_classes: int) -> None:
    if len(predictions) != len(targets):
        raise DataError(f"{len(predictions)} predictions for {len(targets)} images: one prediction dict per image")
    for i, (pred, target) in enumerate(zip(predictions, targets, strict=True)):
        for key in ("boxes", "scores", "labels"):
            if key not in pred:
                raise DataError(f"prediction {i} has no {key!r}: give boxes (N, 4) xyxy, scores (N,), labels (N,)")
        for name, labels in (("prediction", pred["labels"]), ("target", target["labels"])):
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
                raise DataError(f"{name} {i} has a label outside 0..{num_classes - 1}")


def _as_float_dicts(items: Sequence[dict], keys: tuple[str, ...]) -> list[dict]:
    out = []
    for item in items:
        entry = {k: torch.as_tensor(item[k]) for k in keys}
        entry["boxes"] = entry["boxes"].to(torch.float32).reshape(-1, 4)
        entry["labels"] = entry["labels"].to(torch.int64).reshape(-1)
        if "scores" in entry:
            entry["scores"] = entry["scores"].to(torch.float32).reshape(-1)
        out.append(entry)
    return out


def _per_class_values(result: dict, num_classes: int) -> list[float | None]:
    values: list[float | None] = [None] * num_classes
    classes = result["classes"].reshape(-1).tolist()
    per_class = result["map_per_class"].reshape(-1).tolist()
    for c, v in zip(classes, per_class, strict=True):
        if 0 <= c < num_classes and v >= 0:
            values[int(c)] = float(v)
    return values


def detection_map(predictions: Sequence[dict], targets: Sequence[dict], num_classes: int,
                  class_names: Sequence[str] | None = None, per_class: bool = True) -> dict:
    """COCO mAP@[.5:.95] and mAP@.5 of `predictions` against `targets`, overall and per class (fractions).

    `per_class=False` skips the per-class numbers (one COCOeval pass instead of two: what val selection needs).

    `predictions[i]`: {"boxes" (N, 4) xyxy, "scores" (N,), "labels" (N,)}; `targets[i]`: {"boxes", "labels"}.

    Example:
        >>> detection_map(preds, targets, num_classes=5)["map_50"]
        0.73
    """
    from torchmetrics.detection import MeanAveragePrecision  # deferred: torchmetrics import costs ~1 s

    _check(predictions, targets, num_classes)
    preds = _as_float_dicts(predictions, ("boxes", "scores", "labels"))
    gts = _as_float_dicts(targets, ("boxes", "labels"))
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    results = {}
    passes = (("map", IOU_THRESHOLDS), ("map_50", [0.5])) if per_class else (("map", IOU_THRESHOLDS),)
    for key, thresholds in passes:
        metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", iou_thresholds=thresholds,
                                      rec_thresholds=RECALL_THRESHOLDS, max_detection_thresholds=[1, 10, 100],
                                      class_metrics=per_class, backend="pycocotools")
        metric.update(preds, gts)
        results[key] = metric.compute()
    overall = results["map"]

    def value(tensor: torch.Tensor) -> float | None:
        v = float(tensor)
        return None if v < 0 or math.isnan(v) else v

    summary = {
        "map": value(overall["map"]),
        "map_50": value(overall["map_50"]),
        "map_75": value(overall["map_75"]),
        "map_small": value(overall["map_small"]),
        "map_medium": value(overall["map_medium"]),
        "map_large": value(overall["map_large"]),
        "mar_100": value(overall["mar_100"]),
        "conventions": dict(CONVENTIONS),
    }
    if per_class:
        summary["per_class"] = {names[c]: {"map": m, "map_50": m50} for c, (m, m50) in enumerate(zip(
            _per_class_values(results["map"], num_classes), _per_class_values(results["map_50"], num_classes),
            strict=True))}
    return summary
