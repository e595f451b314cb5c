"""Reference points every universality table needs: raw pixels, and any architecture with random weights.

`raw-pixels` is the floor a representation must beat; `random:<name>` separates what the architecture gives
from what the training gives. A random backbone uses the same preprocessing as the pretrained one it mirrors,
so the only difference in a comparison is the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from unirep.backbones import BACKBONES, register_backbone
from unirep.backbones.base import Backbone, DataConfig
from unirep.backbones.packaged import PACKAGED
from unirep.backbones.timm_backbone import (
    TimmBackbone,
    apply_data_overrides,
    build_timm_backbone,
    is_timm_name,
)
from unirep.errors import ConfigError, DataError

RANDOM_PREFIX = "random:"
RAW_PIXELS_SIZE = 32


class RawPixels(Backbone):
    """Normalised pixels resized to `input_size`, flattened: D = 3 * input_size ** 2. No weights."""

    def __init__(self, name: str, data_config: DataConfig):
        super().__init__(name, data_config, weights_id="none")
        self.num_features = 3 * data_config.input_size**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.data_config.input_size
        if tuple(x.shape[1:]) != (3, size, size):
            raise DataError(f"backbone {self.name!r} expects images (B, 3, {size}, {size}) from its data_config "
                            f"transform, got {tuple(x.shape)}: prepare images with backbone.data_config.transform()")
        return x.flatten(1)


@register_backbone("raw-pixels")
def create_raw_pixels(name: str, *, input_size: int | None = None,
                      data_overrides: Mapping[str, Any] | None = None) -> RawPixels:
    """Raw pixels at `input_size` (default 32): the no-representation baseline."""
    base = DataConfig(input_size=RAW_PIXELS_SIZE, interpolation="bilinear", crop_pct=1.0)
    return RawPixels(name, apply_data_overrides(name, base, input_size, data_overrides))


def create_random_backbone(name: str, *, pretrained: bool = False, weights: str | None = None,
                           layer: str | None = None, input_size: int | None = None,
                           data_overrides: Mapping[str, Any] | None = None, seed: int = 0,
                           **model_kwargs: Any) -> TimmBackbone:
    """`random:<timm name or packaged name>`: that architecture, seeded random init, its pretrained preprocessing."""
    if pretrained or weights is not None:
        raise ConfigError(f"backbone {name!r} has random weights by definition: drop pretrained/weights, or name "
                          f"{name.removeprefix(RANDOM_PREFIX)!r} without the 'random:' prefix")
    inner = name.removeprefix(RANDOM_PREFIX)
    packaged = PACKAGED.get(inner)
    arch = packaged.arch if packaged else inner
    return build_timm_backbone(name, arch, base_data_config=packaged.data_config if packaged else None, layer=layer,
                               input_size=input_size, data_overrides=data_overrides, seed=seed,
                               model_kwargs=model_kwargs)


def resolve_random_name(name: str) -> Callable[..., Backbone] | None:
    """Registry fallback for `random:<name>`."""
    if not name.startswith(RANDOM_PREFIX):
        return None
    inner = name.removeprefix(RANDOM_PREFIX)
    return create_random_backbone if inner in PACKAGED or is_timm_name(inner) else None


BACKBONES.add_fallback(resolve_random_name)
