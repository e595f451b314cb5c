"""Spatial feature maps of a frozen image backbone at one stage, through the feature cache.

The prototype probe needs the maps a CNN computes before pooling: timm's `forward_intermediates` at stage i (the
module of `feature_info[i]`, the same stages `--layer stageN` pools). They are extracted once per (backbone, layer,
task split) and stored in unirep's feature cache like pooled features (`SpatialMaps` is a Backbone whose features
are the flattened (C, H, W) map; its identity, part of the cache key, names the layer and the map shape), so
hyperparameter selection, the refit and the `prototype-band` variant never run the backbone again.

Which stage: the backbone's own `layer` when it has one (`unirep eval NAME --layer stage3`), else the task card's
`extra.feature_layer` (an audio card fixes the layer so its frequency axis keeps enough rows), else the deepest
stage whose map keeps at least `min_rows` rows at the backbone's input size (7 by default: at 128 px MobileNetV2's
stage3, stride 16, 8 x 8; at 64 px its stage2, stride 8, 8 x 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unirep.backbones.base import Backbone
from unirep.errors import ConfigError
from unirep.features import ExtractionSettings, FeatureCache, extract_features
from unirep.tasks.base import ImageSet, SplitManifest


def spatial_stages(backbone: Backbone) -> list[tuple[str, str, int]]:
    """(stage name, timm module name, reduction) of each stage with spatial maps; [] for a backbone without them
    (raw pixels, waveform backbones such as BirdNET, anything that only gives pooled features)."""
    model = getattr(backbone, "model", None)
    if getattr(backbone, "modality", "image") != "image" or not hasattr(model, "forward_intermediates"):
        return []
    info = getattr(model, "feature_info", None)
    if not isinstance(info, list) and not hasattr(info, "get_dicts"):
        return []
    entries = info.get_dicts() if hasattr(info, "get_dicts") else info
    return [(f"stage{i}", str(e["module"]), int(e.get("reduction") or 1)) for i, e in enumerate(entries)]


def no_maps_message(backbone: Backbone) -> str:
    return (f"the prototype probe needs spatial feature maps, and backbone {backbone.name!r} "
            f"({type(backbone).__name__}) gives only pooled features: use a CNN image backbone (e.g. "
            "mobilenetv2_100.packaged_in1k, optionally with --layer stageN), or the linear / knn protocols here")


def choose_stage(backbone: Backbone, requested: str | None, min_rows: int) -> tuple[int, str]:
    """(stage index, stage name) of the maps the probe uses (see the module docstring); one line when none fits."""
    stages = spatial_stages(backbone)
    if not stages:
        raise ConfigError(no_maps_message(backbone))
    requested = requested or backbone.layer
    if requested:
        for index, (name, module, _) in enumerate(stages):
            if requested in (name, module):
                return index, name
        valid = ", ".join(f"{n} (= {m})" for n, m, _ in stages)
        raise ConfigError(f"backbone {backbone.name!r} has no layer {requested!r} for prototype maps: valid layers "
                          f"are {valid}")
    size = backbone.data_config.input_size
    fitting = [(i, name) for i, (name, _, reduction) in enumerate(stages) if size // reduction >= min_rows]
    if not fitting:
        raise ConfigError(f"backbone {backbone.name!r} at {size} px has no stage whose map keeps {min_rows} rows "
                          f"(strides {', '.join(str(r) for *_, r in stages)}): raise --input-size")
    return fitting[-1]


class SpatialMaps(Backbone):
    """`inner`'s (C, H, W) map at stage `stage`, flattened to (C*H*W,) features (so the feature cache stores it)."""

    def __init__(self, inner: Backbone, stage: int, stage_name: str):
        super().__init__(inner.name, inner.data_config, inner.weights_id, stage_name)
        self.inner = inner
        self.stage = stage
        with torch.no_grad():
            size = inner.data_config.input_size
            device = next(inner.parameters()).device
            probe = self.maps(torch.zeros(1, 3, size, size, device=device))
        if probe.ndim != 4 or probe.shape[2] * probe.shape[3] < 2:
            raise ConfigError(f"{no_maps_message(inner)} (its {stage_name} output has shape {tuple(probe.shape)})")
        self.map_shape = tuple(int(s) for s in probe.shape[1:])
        self.num_features = int(np.prod(self.map_shape))

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        (feature_map,) = self.inner.model.forward_intermediates(x, indices=[self.stage], intermediates_only=True,
                                                                stop_early=True)
        return feature_map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps(x).reshape(x.shape[0], -1)

    def identity(self) -> dict:
        return {**self.inner.identity(), "class": f"SpatialMaps({type(self.inner).__name__})",
                "maps": {"layer": self.layer, "shape": list(self.map_shape)}, "num_features": self.num_features}


def input_pixels(images: ImageSet, source: Backbone, batch_size: int = 256) -> torch.Tensor:
    """uint8 (N, 3, S, S): the pixels the backbone sees for `images`, prepared as feature extraction prepares them
    (resize + centre crop; a set marked `whole_image`, such as spectrograms, resized whole without the crop)."""
    from unirep.features import image_batches

    config = source.data_config  # image_batches itself drops the crop for whole_image sets
    if len(images) == 0:
        return torch.zeros((0, 3, config.input_size, config.input_size), dtype=torch.uint8)
    return torch.cat(list(image_batches(images, config, batch_size)))


@dataclass
class MapSplit:
    """One split's maps (N, C, H, W) float32 and labels (N,)."""

    maps: torch.Tensor
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def split_maps(source: SpatialMaps, images: ImageSet, settings: ExtractionSettings,
               cache: FeatureCache | None = None, manifest: SplitManifest | None = None,
               split: str | None = None) -> MapSplit:
    """The maps of `images`: from (or into) `cache` under the split's key when a cache and manifest are given, else
    extracted directly (the sealed test images: their labels are hidden, so they are never cached under the
    split's key)."""
    if cache is not None and manifest is not None and split is not None:
        got = cache.get_or_extract(source, manifest, split, images, settings)
    else:
        got = extract_features(source, images, settings, description=f"{source.name}/maps")
    maps = torch.from_numpy(np.ascontiguousarray(got.features)).reshape(-1, *source.map_shape)
    return MapSplit(maps, np.asarray(got.labels))
