"""The networks source schemes train: any timm architecture as trunk, a feature layer, one head per label set.

    image -> trunk (timm, pooled) -> feature layer (Linear + ReLU: the representation) -> heads[label set]

The feature layer plays the role of AlexNet's fc7 in Tamaazousti et al.: its output is the penultimate
representation a backbone exposes, and together with the heads it forms "the last two layers" FSFT retrains.
`NetworkSpec` is everything needed to rebuild a network before loading its weights; it is stored in
checkpoints. Backbones made of several networks concatenate their L-inf-normalised features (MuCaLe/MulDiP).

Why it lives under backbones/: a checkpoint (`unirep.backbones.checkpoint`) rebuilds these networks to load
them as a backbone, and the layers run one way (sources/ trains on top of backbones/, never the reverse).
`unirep.sources.networks` re-exports everything here for the training code.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import timm
import torch
from timm.models import register_model
from timm.models.resnet import BasicBlock, _create_resnet
from torch import nn

from unirep.errors import ConfigError, UnknownNameError
from unirep.registry import Registry


@register_model
def unirep_resnet18_half(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """resnet18 at half width (32-64-128-256 channels): unirep's default source network. With the small-input
    stem it costs ~0.24 GFLOP per training image at 32 px, about what plain resnet18 costs there, but keeps a
    2x2 map in its last stage instead of 1x1. Registered in timm, so it is an ordinary timm architecture."""
    if kwargs.get("pretrained_cfg") is None:  # no hub weights: describe the model instead of timm's warning
        kwargs["pretrained_cfg"] = {"input_size": (3, 32, 32), "interpolation": "bilinear", "crop_pct": 1.0,
                                    "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "num_classes": 1000,
                                    "first_conv": "conv1", "classifier": "fc"}
    return _create_resnet("unirep_resnet18_half", pretrained,
                          **{"block": BasicBlock, "layers": (2, 2, 2, 2), "channels": (32, 64, 128, 256), **kwargs})


# Stem adapters keyed by timm model class: make the stem keep more resolution for small (e.g. 32 px) inputs.
# They only change strides/pooling, never parameter shapes, so pretrained weights still load.
STEM_ADAPTERS: Registry[Callable[[nn.Module], None]] = Registry("stem adapter")


@STEM_ADAPTERS.register("ResNet")
def _resnet_stem(model: nn.Module) -> None:
    # Without the stem max-pool a 32 px image reaches the last stage at 2x2 instead of 1x1.
    model.maxpool = nn.Identity()


@STEM_ADAPTERS.register("EfficientNet", aliases=("MobileNetV3",))
def _efficientnet_stem(model: nn.Module) -> None:
    model.conv_stem.stride = (1, 1)


@STEM_ADAPTERS.register("ConvNeXt")
def _convnext_stem(model: nn.Module) -> None:
    # The 4x4/stride-4 patchify stem becomes 4x4/stride-2 (padding 1): /2 instead of /4, same weights.
    conv = model.stem[0]
    conv.stride, conv.padding = (2, 2), (1, 1)


@dataclass(frozen=True)
class NetworkSpec:
    """How to rebuild a network: architecture, timm kwargs, stem, feature size and heads (name -> classes)."""

    architecture: str
    heads: dict[str, int]
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    small_input_stem: bool = True
    feature_dim: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> NetworkSpec:
        return cls(architecture=raw["architecture"], heads=dict(raw["heads"]),
                   model_kwargs=dict(raw.get("model_kwargs", {})), small_input_stem=bool(raw["small_input_stem"]),
                   feature_dim=raw.get("feature_dim"))


class SourceNetwork(nn.Module):
    """Trunk + feature layer + one linear head per label set. `forward` returns {label set: logits}."""

    def __init__(self, spec: NetworkSpec, trunk: nn.Module | None = None):
        super().__init__()
        self.spec = spec
        self.trunk = trunk if trunk is not None else create_trunk(spec)
        trunk_dim = int(self.trunk.num_features)
        self.feature_dim = spec.feature_dim or trunk_dim
        self.feature = nn.Sequential(nn.Linear(trunk_dim, self.feature_dim), nn.ReLU())
        self.heads = nn.ModuleDict({name: nn.Linear(self.feature_dim, n) for name, n in spec.heads.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The representation: (B, feature_dim), after the feature layer's ReLU."""
        return self.feature(self.trunk(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.features(x)
        return {name: head(features) for name, head in self.heads.items()}

    def last_two_layers(self) -> list[nn.Module]:
        """What FSFT retrains at the full learning rate: the feature layer and the heads."""
        return [self.feature, self.heads]

    def with_new_top(self, feature_dim: int | None) -> SourceNetwork:
        """The same trunk (shared, not copied) under a freshly initialised feature layer and heads."""
        spec = NetworkSpec(self.spec.architecture, dict(self.spec.heads), dict(self.spec.model_kwargs),
                           self.spec.small_input_stem, feature_dim)
        return SourceNetwork(spec, trunk=self.trunk)


def create_trunk(spec: NetworkSpec, weights: str | None = None) -> nn.Module:
    """The timm model without classifier (pooled features), stem adapted to small inputs when asked.

    `weights`: None (random init), "hub" (timm's pretrained weights; needs the network) or a local file.
    """
    check_architecture(spec.architecture)
    try:
        trunk = timm.create_model(spec.architecture, pretrained=weights == "hub", num_classes=0, **spec.model_kwargs)
    except TypeError as exc:
        raise ConfigError(f"model.model_kwargs {sorted(spec.model_kwargs)} rejected by timm model "
                          f"{spec.architecture!r} ({exc}): set model.model_kwargs={{}} or its own arguments") from None
    if weights not in (None, "hub"):
        load_trunk_weights(trunk, weights)
    if spec.small_input_stem:
        adapt_stem(trunk, spec.architecture)
    return trunk


def adapt_stem(trunk: nn.Module, architecture: str) -> None:
    adapter_name = type(trunk).__name__
    if adapter_name not in STEM_ADAPTERS:
        raise ConfigError(f"no small-input stem adapter for {architecture!r} ({adapter_name}); adapters exist for "
                          f"{STEM_ADAPTERS.list()}: set model.small_input_stem=false to keep its stem")
    STEM_ADAPTERS.get(adapter_name)(trunk)


def load_trunk_weights(trunk: nn.Module, path: str) -> None:
    """A local weights file of the architecture (safetensors or weights_only torch file); its classifier is
    dropped since the trunk has none."""
    from unirep.backbones.weights import load_strict, read_state_dict, strip_prefix

    state_dict = strip_prefix(read_state_dict(path), trunk.state_dict())
    classifier = (getattr(trunk, "pretrained_cfg", None) or {}).get("classifier")
    if isinstance(classifier, str):
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(classifier + ".")}
    load_strict(trunk, state_dict, where=f"weights file {path!r}")


def check_architecture(name: str) -> None:
    """Raise UnknownNameError (with close timm names) unless timm knows the architecture `name`."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models()"
    raise UnknownNameError(f"model.architecture {name!r} is not a timm model: {hint}")


def linf_normalise(features: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Divide each example's features by their largest absolute value (MuCaLe-Net's L-inf normalisation)."""
    return features / features.abs().amax(dim=1, keepdim=True).clamp_min(eps)


FEATURE_NORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"linf": linf_normalise, "none": lambda f: f}


def resolve_feature_norm(name: str, num_networks: int) -> str:
    if name == "auto":
        return "linf" if num_networks > 1 else "none"
    if name not in FEATURE_NORMS:
        raise ConfigError(f"feature_norm must be one of {['auto', *FEATURE_NORMS]}, got {name!r}")
    return name


def compose_features(networks: Sequence[SourceNetwork], x: torch.Tensor, norm: str) -> torch.Tensor:
    """Concatenation over networks of each one's normalised features (B, sum of feature dims)."""
    normalise = FEATURE_NORMS[norm]
    return torch.cat([normalise(net.features(x)) for net in networks], dim=1)
