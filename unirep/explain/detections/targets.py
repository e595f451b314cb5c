"""What a detection explanation explains: one kept detection (the target) and how well the detections of a
perturbed image still agree with it.

A target is the detection vector of D-RISE (Petsiuk et al. 2021): its box L_t (xyxy pixels), its class-probability
vector P_t (the `class_scores` row `Detector.detect` keeps for every box, read before NMS chose the label) and its
label c_t = argmax P_t. Against the detections j of a perturbed image (boxes L_j, vectors P_j, objectness O_j where
the detector has one; RetinaNet and YOLOv8 have none, so O_j = 1):

    IoU_j = IoU(L_t, L_j)        cos_j = P_t . P_j / (|P_t| |P_j|)

D-RISE weights of the perturbed image (`drise_weights`), each 0 when it has no detection:
    full      max_j IoU_j * cos_j * O_j                         (the paper's similarity)
    category  max_j cos_j over the j with IoU_j >= match_iou    (the class term; the IoU only decides which
                                                                 detections are the same object)
    location  max_j IoU_j                                       (the box term; classes ignored)

Detection scores (`detection_scores`; what occlusion attributes and deletion/insertion reads) replace the cosine by
the target class's probability P_j[c_t], which falls with the confidence (the cosine does not: a weaker detection
of the same class has cos ~ 1):
    full      max_j IoU_j * P_j[c_t]
    category  max_j P_j[c_t] over the j with IoU_j >= match_iou
    location  max_j IoU_j
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

from unirep.detection.detectors.base import Detections, Detector

VARIANTS = ("full", "category", "location")
MATCH_IOU = 0.5  # IoU at which a perturbed image's detection counts as the same object (COCO's AP50 rule)


@dataclass(frozen=True)
class DetectionTarget:
    """One detection to explain: image `image_index`, detection `index` among that image's kept detections."""

    image_index: int
    index: int
    box: torch.Tensor  # (4,) xyxy pixels
    label: int
    score: float
    class_scores: torch.Tensor  # (C,)

    def to_dict(self, classes: tuple[str, ...]) -> dict:
        return {"detection": self.index, "box": [round(float(v), 2) for v in self.box], "label": self.label,
                "class": classes[self.label], "score": self.score}


def targets_of(detections: Detections, image_index: int) -> list[DetectionTarget]:
    return [DetectionTarget(image_index, i, detections.boxes[i].detach().cpu(), int(detections.labels[i]),
                            float(detections.scores[i]), detections.class_scores[i].detach().cpu())
            for i in range(len(detections))]


def agreement(target: DetectionTarget, detections: Detections) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(IoU_j, cos_j, O_j) of every detection j of a perturbed image against the target (float64)."""
    boxes = detections.boxes.detach().cpu().double()
    if len(boxes) == 0:
        empty = torch.zeros(0, dtype=torch.float64)
        return empty, empty, empty
    iou = box_iou(target.box.double()[None], boxes)[0]
    vectors = detections.class_scores.detach().cpu().double()
    cos = torch.nn.functional.cosine_similarity(target.class_scores.double()[None], vectors, dim=1, eps=1e-12)
    objectness = getattr(detections, "objectness", None)
    objectness = torch.ones_like(iou) if objectness is None else objectness.detach().cpu().double()
    return iou, cos, objectness


def _gated_max(values: torch.Tensor, gate: torch.Tensor) -> float:
    return float(values[gate].max()) if bool(gate.any()) else 0.0


def drise_weights(target: DetectionTarget, detections: Detections, match_iou: float = MATCH_IOU) -> dict[str, float]:
    """The D-RISE weight of one perturbed image for each variant (module docstring)."""
    iou, cos, objectness = agreement(target, detections)
    if len(iou) == 0:
        return dict.fromkeys(VARIANTS, 0.0)
    return {"full": float((iou * cos * objectness).max()), "category": _gated_max(cos, iou >= match_iou),
            "location": float(iou.max())}


def detection_scores(target: DetectionTarget, detections: Detections, match_iou: float = MATCH_IOU
                     ) -> dict[str, float]:
    """The target's score in one perturbed image for each variant (module docstring)."""
    iou, _, _ = agreement(target, detections)
    if len(iou) == 0:
        return dict.fromkeys(VARIANTS, 0.0)
    probability = detections.class_scores.detach().cpu().double()[:, target.label]
    return {"full": float((iou * probability).max()), "category": _gated_max(probability, iou >= match_iou),
            "location": float(iou.max())}


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] float pixels (perturbed copies) -> the uint8 images `Detector.detect` takes."""
    return (images * 255.0).round().clamp(0, 255).to(torch.uint8)


def detect_in_batches(detector: Detector, images: torch.Tensor, *, batch_size: int, conf: float, iou: float,
                      max_det: int) -> list[Detections]:
    """`detector.detect` over uint8 images `batch_size` at a time (the batching D-RISE's speed rests on)."""
    found: list[Detections] = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            found.extend(detector.detect(images[start:start + batch_size], conf=conf, iou=iou, max_det=max_det))
    return found


class CachedDetector:
    """`detect` of uint8 batches with a memory of the batches seen (keyed by their bytes): captum's Occlusion builds
    the same occluded copies for every (detection, variant) it is asked about, so the detector runs once per copy
    and image, not once per copy and target."""

    def __init__(self, detector: Detector, *, conf: float, iou: float, max_det: int):
        self.detector, self.conf, self.iou, self.max_det = detector, conf, iou, max_det
        self.seen: dict[bytes, list[Detections]] = {}
        self.forwards = 0

    def __call__(self, images: torch.Tensor) -> list[Detections]:
        import hashlib

        key = hashlib.blake2b(images.contiguous().numpy().tobytes(), digest_size=16,
                              person=str(tuple(images.shape)).encode()[:16]).digest()
        if key not in self.seen:
            self.seen[key] = detect_in_batches(self.detector, images, batch_size=len(images), conf=self.conf,
                                               iou=self.iou, max_det=self.max_det)
            self.forwards += len(images)
        return self.seen[key]


def score_function(detect, target: DetectionTarget, variant: str, match_iou: float = MATCH_IOU):
    """pixels [0, 1] (B, 3, H, W) -> (B,) the target's `variant` detection score in each image (for captum's
    Occlusion and for deletion/insertion); `detect` maps uint8 images to their detections (a `CachedDetector`)."""

    def score(pixels: torch.Tensor) -> torch.Tensor:
        found = detect(to_uint8(pixels.detach().cpu()))
        return torch.tensor([detection_scores(target, d, match_iou)[variant] for d in found], dtype=torch.float32)

    return score
