"""How good a detection's map is, with the shared explanation metrics (`unirep.explanation_metrics`):

- against the ground truth: the box of the detection's object is the ground-truth box of the same class it overlaps
  most, if that IoU is >= 0.5 (a true positive; other detections get no truth-based number); then the pointing game
  (the map's maximum inside that box) and the share of the map's positive energy inside it;
- against the detector (faithfulness): deletion and insertion curves of the detection's "full" score
  (`targets.detection_scores`: max_j IoU(L_t, L_j) P_j[c_t], detections at a low conf) as the map's top pixels are
  blacked out / restored into a blurred copy, `steps` + 1 points, trapezoid AUC. Deletion low and insertion high
  is good.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

from unirep.detection.detectors.base import Detector
from unirep.explain.detections.targets import MATCH_IOU, CachedDetector, DetectionTarget, score_function
from unirep.explanation_metrics import deletion_insertion_curves, energy_in_box, pointing_game

CURVE_STEPS = 16
FAITHFULNESS_CONF = 0.01


def matching_truth(target: DetectionTarget, truth: dict[str, torch.Tensor], min_iou: float = MATCH_IOU
                   ) -> int | None:
    """Index of the ground-truth box of the target's class it overlaps most, if by >= min_iou; else None."""
    same = torch.nonzero(truth["labels"] == target.label).squeeze(1)
    if len(same) == 0:
        return None
    overlap = box_iou(target.box.double()[None], truth["boxes"][same].double())[0]
    best = int(overlap.argmax())
    return int(same[best]) if float(overlap[best]) >= min_iou else None


def truth_metrics(saliency: torch.Tensor, box: torch.Tensor | None) -> dict:
    if box is None:
        return {"pointing_game": None, "energy_in_box": None}
    return {"pointing_game": pointing_game(saliency, box), "energy_in_box": energy_in_box(saliency, box)}


def faithfulness(detector: Detector, image: torch.Tensor, target: DetectionTarget, saliency: torch.Tensor, *,
                 steps: int = CURVE_STEPS, conf: float = FAITHFULNESS_CONF, iou: float = 0.5, max_det: int = 100,
                 batch_size: int = 32) -> dict:
    """Deletion and insertion AUC of the target's full detection score along the map's pixel order."""
    detect = CachedDetector(detector, conf=conf, iou=iou, max_det=max_det)
    score = score_function(detect, target, "full")
    curves = deletion_insertion_curves(lambda _, batch: score(batch), image.float()[None] / 255.0, saliency[None],
                                       steps=steps, batch_size=batch_size)
    return {"deletion_auc": curves["deletion"]["auc"][0], "insertion_auc": curves["insertion"]["auc"][0],
            "deletion_curve": curves["deletion"]["probability"][0],
            "insertion_curve": curves["insertion"]["probability"][0]}
