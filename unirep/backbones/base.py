"""The backbone contract every feature extractor honours, whatever it wraps (timm, torchvision, packaged
weights, raw pixels, unirep's own source-trained checkpoints).

`Backbone.forward(x)` maps a normalised image batch (B, 3, H, W) to pooled features (B, D) of the chosen
layer: the penultimate pooled features by default, or a pooled intermediate stage. `identity()` says
exactly which network and weights produced the features; it keys the feature cache and goes into records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn
from torchvision.transforms import v2 as T

INTERPOLATIONS = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class DataConfig:
    """How images are prepared for a backbone: resize to input_size / crop_pct, centre crop, normalise.

    Resolved from timm's pretrained config and overridable (small inputs on 2 cores: `input_size=64`).
    """

    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    crop_pct: float = 1.0

    def with_overrides(self, **overrides) -> DataConfig:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def transform(self) -> T.Compose:
        """Eval transform of one PIL image to a normalised float tensor (no augmentation: Kornblith et al.'s
        resize + centre crop). Equal to `normalize_batch(geometry_transform()(img)[None])[0]`."""
        return T.Compose([self.geometry_transform(), T.Lambda(lambda x: self.normalize_batch(x[None])[0])])

    def geometry_transform(self) -> T.Compose:
        """Per-image part: resize + centre crop on uint8 (cheap; run in the data loader)."""
        return T.Compose([T.ToImage(), self.resize_crop()])

    def resize_crop(self) -> T.Compose:
        """Resize (shorter side to input_size / crop_pct) + centre crop of a uint8 (..., 3, H, W) tensor. A batch
        of equal-sized images goes through in one call, with the same result as image by image."""
        resize = int(round(self.input_size / self.crop_pct))
        return T.Compose([
            T.Resize(resize, interpolation=INTERPOLATIONS[self.interpolation], antialias=True),
            T.CenterCrop(self.input_size),
        ])

    def normalize_batch(
        self, batch: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format
    ) -> torch.Tensor:
        """Per-batch part: uint8 (B, 3, H, W) -> normalised float in `memory_format`, vectorised over the batch.
        The float copy is made once, in the layout the model wants, and normalised in place (the same numbers
        as `(batch.float() - mean) / std`)."""
        mean = torch.tensor(self.mean, device=batch.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std, device=batch.device).view(1, 3, 1, 1) * 255.0
        out = torch.empty(batch.shape, dtype=torch.float32, device=batch.device, memory_format=memory_format)
        return out.copy_(batch).sub_(mean).div_(std)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class Backbone(nn.Module):
    """A frozen feature extractor.

    Attributes:
        name: the registered/requested name (e.g. "mobilenetv2_100.packaged", "resnet18", "raw-pixels").
        data_config: the preprocessing this backbone expects.
        weights_id: what the weights are: "sha256:<hex>" of a weights file, "random:seed=<n>",
            "timm-hub:<tag>" for hub weights, or "none" (raw pixels).
        layer: None for penultimate pooled features, else the name of a pooled intermediate stage.
        num_features: D, the feature dimension of `forward`.
    """

    def __init__(self, name: str, data_config: DataConfig, weights_id: str, layer: str | None = None):
        super().__init__()
        self.name = name
        self.data_config = data_config
        self.weights_id = weights_id
        self.layer = layer

    num_features: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def feature_layers(self) -> list[str]:
        """Names accepted as `layer` (besides None = penultimate)."""
        return []

    @property
    def has_source_head(self) -> bool:
        """True when `forward_source_logits` gives source-task logits (LEEP/NCE need them)."""
        return False

    def forward_source_logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"backbone {self.name!r} has no source classification head")

    def forward_with_source_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and source logits of one batch; subclasses override to share one forward pass."""
        return self(x), self.forward_source_logits(x)

    def identity(self) -> dict:
        """What produced the features: part of every cache key and result record."""
        return {
            "name": self.name,
            "class": type(self).__name__,
            "weights_id": self.weights_id,
            "layer": self.layer,
            "data_config": self.data_config.to_dict(),
            "num_features": self.num_features,
            "params": sum(p.numel() for p in self.parameters()),
        }
