"""Occlusion adapted to detection: captum's `Occlusion` over a detection-score function.

captum slides a (3, window, window) patch of `baseline` over the [0, 1] pixels with `stride`, batching
`perturbations_per_eval` occluded copies per detector call; the forward function is the target's detection score
in each copy (`targets.detection_scores`: the IoU-weighted class probability of the best-matching detection for
"full", the target class's probability among the detections overlapping the box by >= match_iou for "category",
the best IoU with the box for "location"), read from `Detector.detect` at a low `conf` so a dimmed detection still
scores. A pixel's value is the mean score drop of the windows covering it. Each (detection, variant) is one captum
call; the occluded copies are the same in every call, so `CachedDetector` runs the detector on them once per image:
(windows + 1) forwards per image, whatever the number of detections.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from unirep.detection.detectors.base import Detector
from unirep.explain.detections.targets import MATCH_IOU, CachedDetector, DetectionTarget, score_function


@dataclass(frozen=True)
class OcclusionSettings:
    window: int | None = None  # None: 1/8 of the shorter side (as `unirep inspect`'s occlusion section)
    stride: int | None = None  # None: half the window
    baseline: float = 0.0
    perturbations_per_eval: int = 32
    conf: float = 0.01
    iou: float = 0.5
    max_det: int = 100
    match_iou: float = MATCH_IOU
    variants: tuple[str, ...] = ("category", "location")

    def resolved(self, height: int, width: int) -> OcclusionSettings:
        window = self.window or max(2, min(height, width) // 8)
        return OcclusionSettings(**{**asdict(self), "window": window, "stride": self.stride or max(1, window // 2)})

    def to_dict(self) -> dict:
        return {**asdict(self), "variants": list(self.variants)}


def occlusion_saliency(detector: Detector, image: torch.Tensor, targets: list[DetectionTarget],
                       settings: OcclusionSettings) -> dict[str, torch.Tensor]:
    """captum Occlusion maps of `targets` in the uint8 (3, H, W) `image`: {variant: (T, H, W) float64}."""
    from captum.attr import Occlusion

    height, width = image.shape[-2:]
    settings = settings.resolved(height, width)
    pixels = image.float()[None] / 255.0
    maps = {v: torch.zeros(len(targets), height, width, dtype=torch.float64) for v in settings.variants}
    detect = CachedDetector(detector, conf=settings.conf, iou=settings.iou, max_det=settings.max_det)
    for variant in settings.variants:
        for k, target in enumerate(targets):
            score = score_function(detect, target, variant, settings.match_iou)
            attribution = Occlusion(score).attribute(
                pixels, sliding_window_shapes=(3, settings.window, settings.window),
                strides=(3, settings.stride, settings.stride), baselines=settings.baseline,
                perturbations_per_eval=settings.perturbations_per_eval)
            # the window spans the channels, so every channel of a pixel carries the same value
            maps[variant][k] = attribution[0].mean(dim=0).double()
    return maps
