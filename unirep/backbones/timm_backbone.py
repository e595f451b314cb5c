"""The timm adapter: any timm model name is a backbone (registry fallback), with hub, local-file or random weights.

Features follow timm's own feature contract: the penultimate pooled features are
`forward_head(forward_features(x), pre_logits=True)`; an intermediate stage `stage<i>` is
`forward_intermediates(x, indices=[i], intermediates_only=True)` (i indexes `model.feature_info`), global-average
pooled. The preprocessing comes from timm's pretrained config, so a backbone is evaluated the way it was trained.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import resolve_data_config
from timm.models import get_pretrained_cfg, split_model_name_tag
from torch import nn

from unirep.backbones import BACKBONES
from unirep.backbones.base import INTERPOLATIONS, Backbone, DataConfig
from unirep.backbones.weights import load_strict, read_state_dict, strip_prefix
from unirep.errors import ConfigError, WeightsError
from unirep.fileio import sha256_file

# Loads weights into a freshly built model in place and returns the weights_id.
WeightsLoader = Callable[[nn.Module], str]


class TimmBackbone(Backbone):
    """A timm model as a frozen feature extractor; `model` is the timm network itself (for fine-tuning)."""

    def __init__(self, name: str, model: nn.Module, data_config: DataConfig, weights_id: str,
                 layer: str | None = None, *, trained_head: bool):
        stage_names = _stage_names(model)
        stage = None if layer is None else _resolve_layer(name, layer, stage_names)
        super().__init__(name, data_config, weights_id, None if stage is None else stage_names[stage][0])
        self.model = model.eval()
        self._stage_names = stage_names
        self._stage = stage
        self._trained_head = trained_head
        self.num_features = _num_features(model, stage)

    @property
    def feature_layers(self) -> list[str]:
        return [aliases[0] for aliases in self._stage_names]

    @property
    def has_source_head(self) -> bool:
        # A random head predicts nothing; LEEP/NCE need the source task's trained classifier.
        return self._trained_head and getattr(self.model, "num_classes", 0) > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._stage is None:
            return self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        # stop_early: the stages after the requested one are not computed.
        (feature_map,) = self.model.forward_intermediates(x, indices=[self._stage], intermediates_only=True,
                                                          stop_early=True)
        # NCHW maps average over space; token sequences (B, N, C), if a model returns them, over tokens.
        return feature_map.mean(dim=(2, 3)) if feature_map.ndim == 4 else feature_map.mean(dim=1)

    def forward_source_logits(self, x: torch.Tensor) -> torch.Tensor:
        if not self.has_source_head:
            return super().forward_source_logits(x)
        return self.model.forward_head(self.model.forward_features(x))

    def forward_with_source_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass for both (LEEP/NCE next to the probes used to cost a second one): the classifier
        applied to the pre-logits features is what `forward_head` computes in eval mode."""
        if self._stage is not None or not self.has_source_head:
            return super().forward_with_source_logits(x)
        features = self.forward(x)
        return features, self.model.get_classifier()(features)

    def identity(self) -> dict:
        return {**super().identity(), "architecture": self.model.pretrained_cfg.get("architecture")}


def _stage_names(model: nn.Module) -> list[tuple[str, ...]]:
    """Per stage: the canonical name `stage<i>`, then timm's module name as an alias (e.g. `layer3`)."""
    if not hasattr(model, "forward_intermediates") or not hasattr(model, "feature_info"):
        return []
    return [(f"stage{i}", info["module"]) for i, info in enumerate(model.feature_info)]


def _resolve_layer(name: str, layer: str, stage_names: list[tuple[str, ...]]) -> int:
    for index, aliases in enumerate(stage_names):
        if layer in aliases:
            return index
    valid = ", ".join(f"{a[0]} (= {a[1]})" for a in stage_names) or "none"
    raise ConfigError(f"backbone {name!r} has no layer {layer!r}: valid layers are {valid}, or none for the "
                      f"penultimate features")


def _num_features(model: nn.Module, stage: int | None) -> int:
    if stage is not None:
        return int(model.feature_info[stage]["num_chs"])
    # head_hidden_size differs from num_features when the head has its own pre-logits layer (MobileNetV3).
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def timm_data_config(model: nn.Module) -> DataConfig:
    """The preprocessing of the model's pretrained config (timm's resolve_data_config)."""
    cfg = resolve_data_config({}, model=model)
    interpolation = cfg["interpolation"] if cfg["interpolation"] in INTERPOLATIONS else "bicubic"
    return DataConfig(
        input_size=int(cfg["input_size"][-2]),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=interpolation,
        crop_pct=float(cfg["crop_pct"]),
    )


def apply_data_overrides(name: str, base: DataConfig, input_size: int | None,
                         data_overrides: Mapping[str, Any] | None) -> DataConfig:
    """`base` with `data_overrides` and `input_size` applied; bad keys or values raise ConfigError."""
    overrides = dict(data_overrides or {})
    valid = set(DataConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(f"backbone {name!r}: unknown data_overrides {unknown}; valid keys are {sorted(valid)}")
    if input_size is not None:
        overrides["input_size"] = input_size
    for key in ("mean", "std"):
        if overrides.get(key) is not None:
            overrides[key] = _triple(name, key, overrides[key])
    config = base.with_overrides(**overrides)
    if config.interpolation not in INTERPOLATIONS:
        raise ConfigError(f"backbone {name!r}: interpolation {config.interpolation!r} is not one of "
                          f"{sorted(INTERPOLATIONS)}")
    if not (isinstance(config.input_size, int) and config.input_size > 0) or not 0 < config.crop_pct <= 1:
        raise ConfigError(f"backbone {name!r}: input_size must be a positive int and 0 < crop_pct <= 1 "
                          f"(got {config.input_size!r}, {config.crop_pct!r})")
    return config


def _triple(name: str, key: str, value: Any) -> tuple[float, float, float]:
    values = tuple(float(v) for v in (value if isinstance(value, list | tuple) else [value] * 3))
    if len(values) != 3:
        raise ConfigError(f"backbone {name!r}: data_overrides {key} needs 1 or 3 values, got {value!r}")
    return values  # type: ignore[return-value]


def is_timm_name(name: str) -> bool:
    """True for a timm architecture, optionally with a pretrained tag timm knows (`resnet18.a1_in1k`)."""
    if not timm.is_model(name):
        return False
    _, tag = split_model_name_tag(name)
    return not tag or name in timm.list_pretrained(name)


def build_timm_backbone(name: str, arch: str, *, pretrained: bool = False, loader: WeightsLoader | None = None,
                        base_data_config: DataConfig | None = None, layer: str | None = None,
                        input_size: int | None = None, data_overrides: Mapping[str, Any] | None = None,
                        seed: int = 0, model_kwargs: Mapping[str, Any] | None = None) -> TimmBackbone:
    """Create timm model `arch`, give it weights (hub / `loader` / seeded random init) and wrap it.

    The data config is `base_data_config` (default: timm's pretrained config) with the overrides applied.
    """
    kwargs = dict(model_kwargs or {})
    if input_size is not None and "img_size" not in kwargs and _fixed_input_size(arch):
        # Transformers with fixed position embeddings are built for the requested size; timm resamples
        # hub weights to it, and local files go through timm's own checkpoint filter (see load_file_weights).
        kwargs["img_size"] = input_size
    # A forked RNG makes random init reproducible for `seed` without disturbing the caller's RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _create_model(name, arch, pretrained, kwargs)
    if pretrained:
        weights_id = f"timm-hub:{model.pretrained_cfg.get('tag') or arch}"
    elif loader is not None:
        weights_id = loader(model)
    else:
        weights_id = f"random:seed={seed}"
    data_config = apply_data_overrides(name, base_data_config or timm_data_config(model), input_size, data_overrides)
    # Hub weights keep their head unless num_classes changed it (timm then re-initialises the classifier).
    trained_head = loader is not None or (
        pretrained and model.num_classes == model.pretrained_cfg.get("num_classes", model.num_classes))
    return TimmBackbone(name, model, data_config, weights_id, layer, trained_head=trained_head)


def _fixed_input_size(arch: str) -> bool:
    try:
        return bool(get_pretrained_cfg(arch).fixed_input_size)
    except (RuntimeError, AttributeError):
        return False


def _create_model(name: str, arch: str, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    try:
        return timm.create_model(arch, pretrained=pretrained, **kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"backbone {name!r}: timm model {arch!r} rejected arguments {sorted(kwargs)} ({exc})"
        ) from None
    except OSError as exc:
        if not pretrained:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"backbone {name!r}: could not fetch timm hub weights ({first}): connect to the internet, or download "
            f"them once and pass the local file as weights=FILE (--weights FILE)"
        ) from None


def file_loader(path: str | Path) -> WeightsLoader:
    """A loader for a local weights file (.safetensors, or torch files read with weights_only=True)."""

    def load(model: nn.Module) -> str:
        state_dict = strip_prefix(read_state_dict(path), model.state_dict())
        state_dict = _timm_checkpoint_filter(model, state_dict)
        load_strict(model, state_dict, where=f"weights file {str(path)!r}")
        return f"sha256:{sha256_file(path)}"

    return load


def _timm_checkpoint_filter(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run the architecture's own timm checkpoint filter (original-format keys, position-embedding resampling).

    It is what timm applies to hub weights; a filter that fails on a foreign file leaves the file as it is,
    so the strict check that follows names the keys that do not fit.
    """
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is None:
        return state_dict
    try:
        return dict(filter_fn(dict(state_dict), model))
    except Exception:  # noqa: BLE001 - a foreign file may break any filter; the strict check reports it
        return state_dict


def create_timm_backbone(name: str, *, pretrained: bool = False, weights: str | Path | None = None,
                         layer: str | None = None, input_size: int | None = None,
                         data_overrides: Mapping[str, Any] | None = None, seed: int = 0,
                         **model_kwargs: Any) -> TimmBackbone:
    """Factory for any timm model name, with hub weights (`pretrained=True`) or a local file (`weights=`).

    A name alone is refused rather than given random weights (timm.create_model's default): results would be filed
    under a pretrained model's name. Random init is its own backbone, `random:<name>` (unirep.backbones.baselines).
    A pretrained tag (`resnet50.a1_in1k`) chooses the hub weights and preprocessing, but still needs
    `pretrained=True` to fetch them, or a local file of them.
    """
    require_weights(name, pretrained=pretrained, weights=weights)
    loader = None if weights is None else file_loader(weights)
    return build_timm_backbone(name, name, pretrained=pretrained, loader=loader, layer=layer, input_size=input_size,
                               data_overrides=data_overrides, seed=seed, model_kwargs=model_kwargs)


def require_weights(name: str, *, pretrained: bool = False, weights: str | Path | None = None, **_: Any) -> None:
    """Exactly one source of weights for a timm name: the hub or a local file."""
    if pretrained and weights is not None:
        raise ConfigError(f"backbone {name!r}: give either pretrained=True (timm hub) or weights=PATH, not both")
    if not pretrained and weights is None:
        raise ConfigError(f"backbone {name!r} names an architecture, not weights: give pretrained=True (--pretrained, "
                          f"timm's hub weights; needs the network once), weights=FILE (--weights FILE, a local "
                          f".safetensors/.pth), or name it 'random:{name}' for random init")
    if pretrained and not has_hub_weights(name):
        raise ConfigError(f"backbone {name!r}: timm has no pretrained weights for this architecture: give "
                          f"weights=FILE (--weights FILE), or name it 'random:{name}' for random init")


def has_hub_weights(name: str) -> bool:
    """Whether timm knows pretrained weights for the name (its default tag when it has none); timm.create_model
    raises a RuntimeError otherwise, only once it has built the model."""
    arch, tag = split_model_name_tag(name)
    return bool(timm.list_pretrained(name if tag else f"{arch}.*"))


create_timm_backbone.check_request = require_weights  # type: ignore[attr-defined]  # see create_backbone


def resolve_timm_name(name: str) -> Callable[..., Backbone] | None:
    """Registry fallback: every timm model name is a backbone."""
    return create_timm_backbone if is_timm_name(name) else None


BACKBONES.add_fallback(resolve_timm_name)
