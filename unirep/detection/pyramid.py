"""Multi-scale feature maps of a frozen unirep backbone, computed once per split and held in memory, so the
detection head's learning-rate / epoch selection never runs the backbone again.

Which networks: a timm backbone's model (`TimmBackbone.model`, packaged ImageNet weights included) or the trunks of a
unirep source checkpoint (`SourceCheckpointBackbone.networks[i].trunk`; several networks: their maps concatenated
per level). Which maps: timm's `forward_intermediates` at the last `num_levels` stages of `feature_info` (for CNNs
strides 8, 16, 32: C3-C5), the modules `--layer stageN` pools. A backbone without such maps (raw pixels, waveform
backbones, CLIP's towers) is refused in one line.

Images are resized to `input_size` x `input_size` (bilinear, antialiased; aspect not kept, as torchvision's
detection transform would letterbox instead — all composed scenes are square) and normalised with the backbone's
mean / std; boxes are scaled by the same factors, and predictions are scaled back to the image's own pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from unirep.backbones.base import Backbone
from unirep.detection.data import DetectionSet
from unirep.errors import ConfigError


def timm_trunks(backbone: Backbone) -> list[nn.Module]:
    """The timm networks whose stage maps a backbone's features come from ([] when it has none)."""
    if getattr(backbone, "modality", "image") != "image":
        return []
    model = getattr(backbone, "model", None)
    if model is not None and hasattr(model, "forward_intermediates") and hasattr(model, "feature_info"):
        return [model]
    networks = getattr(backbone, "networks", None)
    trunks = [getattr(net, "trunk", None) for net in (networks or [])]
    if trunks and all(t is not None and hasattr(t, "forward_intermediates") for t in trunks):
        return trunks
    return []


def no_pyramid_message(backbone: Backbone) -> str:
    return (f"the detection protocol needs spatial feature maps, and backbone {backbone.name!r} "
            f"({type(backbone).__name__}) gives only pooled features: use a timm CNN backbone (e.g. "
            "mobilenetv2_100.packaged_in1k) or a unirep source checkpoint")


@dataclass
class PyramidSplit:
    """One split's maps (a list over levels of float32 (N, C_l, H_l, W_l)), targets in input pixels, and each
    image's own (height, width) to scale predictions back."""

    maps: list[torch.Tensor]
    targets: list[dict[str, torch.Tensor]]
    image_sizes: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.image_sizes)


class FeaturePyramid:
    """The frozen backbone's maps at `num_levels` stages; `extract(DetectionSet)` -> PyramidSplit."""

    def __init__(self, backbone: Backbone, input_size: int, num_levels: int = 3, batch_size: int = 64,
                 device: str | torch.device = "cpu"):
        self.backbone = backbone
        self.trunks = timm_trunks(backbone)
        if not self.trunks:
            raise ConfigError(no_pyramid_message(backbone))
        stages = len(self.trunks[0].feature_info)
        if num_levels < 1 or num_levels > stages:
            raise ConfigError(f"detection.num_levels={num_levels}: backbone {backbone.name!r} has {stages} stages")
        self.stage_indices = list(range(stages - num_levels, stages))
        self.input_size = int(input_size)
        self.batch_size = batch_size
        self.device = torch.device(device)
        config = backbone.data_config
        self.mean = torch.tensor(config.mean).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(config.std).view(1, 3, 1, 1) * 255.0
        for trunk in self.trunks:
            trunk.eval().to(self.device)
        probe = self.maps(torch.zeros(1, 3, self.input_size, self.input_size, dtype=torch.uint8))
        if any(m.ndim != 4 or m.shape[2] * m.shape[3] < 1 for m in probe):
            raise ConfigError(f"{no_pyramid_message(backbone)} (its stage outputs have shapes "
                              f"{[tuple(m.shape) for m in probe]})")
        self.channels = [int(m.shape[1]) for m in probe]
        self.map_sizes = [tuple(int(s) for s in m.shape[2:]) for m in probe]
        self.strides = [self.input_size // h for h, _ in self.map_sizes]

    @torch.no_grad()  # not inference_mode: the maps feed the head's training, whose autograd must save them
    def maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """uint8 (B, 3, S, S) -> one float32 map per level (trunks' maps concatenated on channels)."""
        x = (images.to(self.device, torch.float32) - self.mean.to(self.device)) / self.std.to(self.device)
        per_trunk = [trunk.forward_intermediates(x, indices=self.stage_indices, intermediates_only=True,
                                                 stop_early=True) for trunk in self.trunks]
        levels = []
        for level in zip(*per_trunk, strict=True):
            if len({tuple(m.shape[2:]) for m in level}) > 1:
                raise ConfigError(f"the source networks of {self.backbone.name!r} give maps of different sizes at one "
                                  "level: the detection protocol needs one pyramid")
            levels.append(torch.cat([m.float() for m in level], dim=1).cpu())
        return levels

    def to_input(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (3, H, W) -> uint8 (3, S, S)."""
        if tuple(image.shape[1:]) == (self.input_size, self.input_size):
            return image
        return TF.resize(image, [self.input_size, self.input_size], antialias=True)

    def extract(self, scenes: DetectionSet) -> PyramidSplit:
        """Maps, input-pixel targets and image sizes of every image of `scenes`, in order."""
        levels: list[list[torch.Tensor]] = [[] for _ in self.stage_indices]
        sizes: list[tuple[int, int]] = []
        for start in range(0, len(scenes), self.batch_size):
            indices = range(start, min(start + self.batch_size, len(scenes)))
            batch = []
            for i in indices:
                image = scenes.image(i)
                sizes.append((int(image.shape[1]), int(image.shape[2])))
                batch.append(self.to_input(image))
            for level, maps in zip(levels, self.maps(torch.stack(batch)), strict=True):
                level.append(maps)
        maps = [torch.cat(level) if level else torch.zeros(0) for level in levels]
        targets = [scale_target(scenes.target(i), sizes[i], self.input_size) for i in range(len(scenes))]
        return PyramidSplit(maps, targets, sizes)

    def describe(self) -> dict:
        return {"stages": [f"stage{i}" for i in self.stage_indices], "channels": self.channels,
                "strides": self.strides, "input_size": self.input_size, "networks": len(self.trunks)}


def scale_target(target: dict[str, torch.Tensor], size: tuple[int, int], input_size: int) -> dict[str, torch.Tensor]:
    """A target in the image's pixels -> in the resized input's pixels."""
    height, width = size
    factor = torch.tensor([input_size / width, input_size / height] * 2, dtype=torch.float32)
    return {"boxes": target["boxes"] * factor, "labels": target["labels"]}


def unscale_boxes(boxes: torch.Tensor, size: tuple[int, int], input_size: int) -> torch.Tensor:
    """Boxes in input pixels -> in the image's own pixels (the inverse of `scale_target`)."""
    height, width = size
    return boxes * torch.tensor([width / input_size, height / input_size] * 2, dtype=boxes.dtype)


def stack_targets(targets: list[dict]) -> np.ndarray:
    out = np.empty(len(targets), dtype=object)
    out[:] = targets
    return out
