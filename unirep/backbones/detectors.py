"""Trained detectors as unirep backbones: `detector:<folder>` (a folder `unirep train-detector` wrote), pooled
features of the detector's own backbone or neck, so detectors join the classification leaderboard as
representations.

Layers (`--layer`):
- YOLOv8 (`kind` yolov8): default = layer 9 (SPPF, the end of ultralytics' backbone), "neck" = layers 15, 18, 21
  (the C2f outputs feeding the Detect head, strides 8/16/32) concatenated; both global-average pooled by
  ultralytics' own `model(x, embed=[...])`.
- RetinaNet: default = the timm body's last stage (C5, stride 32), "fpn" = P3..P7 of the FPN concatenated; each
  global-average pooled.

Preprocessing is the detector's own (YOLO: RGB / 255; RetinaNet: ImageNet mean/std), resized to the image side it
was trained at (the record's `image_size`, override with --input-size). The weights are the folder's
safetensors (sha256 in `weights_id`); the classification head of the detector is never used.

Example:
    >>> from unirep.backbones import create_backbone
    >>> backbone = create_backbone("detector:runs/detectors/yolov8n", layer="neck")
    >>> backbone.num_features
    448
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from unirep.backbones import BACKBONES
from unirep.backbones.base import Backbone, DataConfig
from unirep.errors import ConfigError

PREFIX = "detector:"
LAYERS = {"yolov8": ("neck",), "retinanet": ("fpn",)}


class DetectorBackbone(Backbone):
    """A stored detector's backbone (or neck) as a frozen feature extractor of pooled features."""

    def __init__(self, name: str, detector, data_config: DataConfig, weights_id: str, layer: str | None):
        super().__init__(name, data_config, weights_id, layer)
        self.detector = detector.eval()
        with torch.no_grad():
            probe = torch.zeros(1, 3, data_config.input_size, data_config.input_size)
            self.num_features = int(self(probe).shape[1])

    @property
    def feature_layers(self) -> list[str]:
        return list(LAYERS[self.detector.kind])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.detector.kind == "yolov8":
            from unirep.detection.detectors.yolo import BACKBONE_LAYER, NECK_LAYERS

            return self.detector.embed(x, NECK_LAYERS if self.layer == "neck" else (BACKBONE_LAYER,))
        fpn = self.detector.module.backbone
        if self.layer == "fpn":
            return torch.cat([m.mean(dim=(2, 3)) for m in fpn(x).values()], dim=1)
        (c5,) = fpn.body.forward_intermediates(x, indices=[fpn.stage_indices[-1]], intermediates_only=True,
                                               stop_early=True)
        return c5.mean(dim=(2, 3))

    def identity(self) -> dict:
        return {**super().identity(), "detector_kind": self.detector.kind, "classes": list(self.detector.classes)}


def detector_dir(name: str) -> Path:
    path = Path(name.removeprefix(PREFIX)).expanduser()
    return path.parent if path.suffix == ".safetensors" else path


def create_detector_backbone(name: str, *, layer: str | None = None, input_size: int | None = None,
                             data_overrides: Mapping[str, Any] | None = None) -> DetectorBackbone:
    """Load `detector:<folder>` (or `detector:<folder>/weights.safetensors`) as a frozen backbone."""
    from unirep.backbones.timm_backbone import apply_data_overrides
    from unirep.detection.detectors import load_detector

    detector = load_detector(detector_dir(name))
    if layer is not None and layer not in LAYERS[detector.kind]:
        raise ConfigError(f"backbone {name!r} ({detector.kind}): layer must be one of {list(LAYERS[detector.kind])} "
                          f"or unset (the backbone's last stage), got {layer!r}")
    mean, std = _normalisation(detector)
    size = detector.metadata.get("image_size") or input_size
    if size is None:
        raise ConfigError(f"backbone {name!r}: its record names no training image size: give --input-size")
    data_config = apply_data_overrides(name, DataConfig(int(size), mean, std, "bilinear", 1.0), input_size,
                                       data_overrides)
    return DetectorBackbone(name, detector, data_config, f"sha256:{detector.metadata['weights_sha256']}", layer)


def _normalisation(detector) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if detector.kind == "yolov8":
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # ultralytics' input is RGB / 255
    return tuple(detector.config["mean"]), tuple(detector.config["std"])


def resolve_detector_name(name: str):
    """Registry fallback: `detector:<folder>`."""
    return create_detector_backbone if name.startswith(PREFIX) else None


BACKBONES.add_fallback(resolve_detector_name)
