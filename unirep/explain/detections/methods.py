"""The registry of detection-explanation methods: name -> function(detector, image, targets, settings) returning
{variant: (T, H, W) map} for the target detections of one uint8 (3, H, W) image.

Registered: `drise` (full, category, location), `occlusion` (category, location), `gradcam` (category,
location), `eigencam` (full only: target-free). `explain_image` runs the chosen ones and times each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from unirep.detection.detectors.base import Detector
from unirep.errors import ConfigError
from unirep.explain.detections.cam import eigencam_saliency, gradcam_saliency
from unirep.explain.detections.drise import DriseSettings, drise_saliency
from unirep.explain.detections.occlusion import OcclusionSettings, occlusion_saliency
from unirep.explain.detections.targets import MATCH_IOU, DetectionTarget
from unirep.registry import Registry

MethodFunction = Callable[[Detector, torch.Tensor, list[DetectionTarget], "ExplainSettings"], dict[str, torch.Tensor]]
DETECTION_METHODS: Registry[MethodFunction] = Registry("detection explanation method")
register_method = DETECTION_METHODS.register


@dataclass(frozen=True)
class ExplainSettings:
    """The settings of every method (recorded with each explanation)."""

    drise: DriseSettings = field(default_factory=DriseSettings)
    occlusion: OcclusionSettings = field(default_factory=OcclusionSettings)
    match_iou: float = MATCH_IOU

    def to_dict(self) -> dict:
        return {"drise": self.drise.to_dict(), "occlusion": self.occlusion.to_dict(), "match_iou": self.match_iou,
                "gradcam": {"targets": {"category": "P_a*[c_t] at the producing anchor",
                                        "location": f"sum of IoU(B_a, L_t) over anchors with IoU >= {self.match_iou}"},
                            "aggregation": "grad-cam: ReLU, min-max per layer, mean over layers, min-max"},
                "eigencam": {"projection": "first principal component, sign-corrected (|min| > |max| flips)"}}


@register_method("drise")
def _drise(detector, image, targets, settings: ExplainSettings):
    return drise_saliency(detector, image, targets, settings.drise)


@register_method("occlusion")
def _occlusion(detector, image, targets, settings: ExplainSettings):
    return occlusion_saliency(detector, image, targets, settings.occlusion)


@register_method("gradcam")
def _gradcam(detector, image, targets, settings: ExplainSettings):
    return gradcam_saliency(detector, image, targets, match_iou=settings.match_iou)


@register_method("eigencam")
def _eigencam(detector, image, targets, settings: ExplainSettings):
    return eigencam_saliency(detector, image, targets)


def parse_methods(spec: str) -> list[str]:
    """`drise,occlusion,eigencam` -> the names, each checked against the registry (one line for an unknown one)."""
    names = [n.strip() for n in (spec or "").split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--methods is empty: give some of {', '.join(DETECTION_METHODS.list())}")
    unknown = [n for n in names if n not in DETECTION_METHODS]
    if unknown:
        raise ConfigError(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(DETECTION_METHODS.list())}")
    return list(dict.fromkeys(names))


@dataclass
class MethodResult:
    maps: dict[str, torch.Tensor]  # variant -> (T, H, W)
    wall_s: float
    cpu_s: float


def explain_image(detector: Detector, image: torch.Tensor, targets: list[DetectionTarget], methods: list[str],
                  settings: ExplainSettings) -> dict[str, MethodResult]:
    """Every method's maps of the image's targets, with its wall and process-CPU seconds for the whole image."""
    results = {}
    for name in methods:
        wall, cpu = time.perf_counter(), time.process_time()
        maps = DETECTION_METHODS.get(name)(detector, image, targets, settings)
        results[name] = MethodResult({k: v.detach().double().cpu() for k, v in maps.items()},
                                     time.perf_counter() - wall, time.process_time() - cpu)
    return results
