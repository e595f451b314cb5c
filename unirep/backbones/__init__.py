"""Backbones: a registry of factories, with every timm model name and `random:<name>` as fallbacks.

Registered names: packaged ImageNet weights (`mobilenetv2_100.packaged_in1k`, `tf_efficientnet_lite0.packaged_in1k`,
`tf_efficientnet_lite1.packaged_in1k`), `raw-pixels`, and whatever the modules in BACKBONE_MODULES add. Any timm name
(`resnet18`, `resnet50.a1_in1k`) works through the timm adapter with `pretrained=True` (timm's hub) or `weights=FILE`
(a local file); alone it is refused, never silently random. `random:<name>` gives that architecture with seeded
random weights, under a name that says so.

Example:
    >>> from unirep.backbones import create_backbone
    >>> backbone = create_backbone("mobilenetv2_100.packaged_in1k", input_size=64)
    >>> backbone.num_features, backbone.weights_id[:15]
    (1280, 'sha256:b0353104')
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from unirep.backbones.base import Backbone, DataConfig
from unirep.errors import ConfigError, UnknownNameError
from unirep.registry import Registry

BACKBONES: Registry[Callable[..., Backbone]] = Registry("backbone")
register_backbone = BACKBONES.register

# Modules that register backbones (or fallbacks) on import. Add yours here.
BACKBONE_MODULES = (
    "unirep.backbones.timm_backbone",
    "unirep.backbones.packaged",
    "unirep.backbones.baselines",
    "unirep.backbones.checkpoint",
    "unirep.backbones.clip",  # `clip:<open_clip model>`; open_clip itself is imported on first use
    "unirep.backbones.detectors",  # `detector:<folder>`: a trained detector's backbone / neck, pooled
    "unirep.backbones.audio_baselines",  # logmel-stats, wave-logmel-stats
    "unirep.backbones.birdnet",  # `birdnet` (waveforms, 48 kHz); ai-edge-litert is imported on first use
)

# create_backbone's defaults: arguments equal to these are not passed on, so a factory only declares what it uses.
_DEFAULTS: dict[str, Any] = {"pretrained": False, "weights": None, "layer": None, "input_size": None,
                             "data_overrides": None, "seed": 0}


def create_backbone(name: str, *, pretrained: bool = False, weights: str | Path | None = None,
                    layer: str | None = None, input_size: int | None = None,
                    data_overrides: Mapping[str, Any] | None = None, seed: int = 0, **kwargs: Any) -> Backbone:
    """Build the backbone `name` as a frozen feature extractor in eval mode.

    Unset arguments are dropped (like timm.create_model), so each factory only sees what the caller chose.

    Args:
        name: a registered name, any timm model name (optionally with a pretrained tag), or `random:<name>`.
        pretrained: timm names only: fetch timm's hub weights (needs the network or timm's local cache).
        weights: timm names only: a local .safetensors/.pth file for this architecture. A timm name needs one of
            the two (random init is `random:<name>`).
        layer: None for penultimate pooled features, else one of `backbone.feature_layers` (e.g. "stage3").
        input_size: image side the data config resizes to (default: the backbone's own).
        data_overrides: DataConfig fields to override (mean, std, interpolation, crop_pct, input_size).
        seed: seed of the random init (random weights only; recorded in weights_id).
        **kwargs: passed to the factory (for timm names: to timm.create_model, e.g. num_classes).

    Returns:
        the Backbone; `backbone.data_config.transform()` prepares PIL images for it.

    Example:
        >>> backbone = create_backbone("random:resnet18", input_size=64, layer="stage3", seed=1)
        >>> backbone.num_features, backbone.weights_id
        (256, 'random:seed=1')
    """
    factory, chosen = _checked_request(name, pretrained=pretrained, weights=weights, layer=layer,
                                       input_size=input_size, data_overrides=data_overrides, seed=seed, **kwargs)
    return factory(name, **chosen).eval()


def check_backbone(name: str, **arguments: Any) -> None:
    """Refuse what `create_backbone(name, **arguments)` would refuse for the name and the arguments it is given
    (unknown name, arguments its factory does not take, a timm name without weights), without building it: a run
    checks all its backbones before the first one costs anything."""
    _checked_request(name, **arguments)


def _checked_request(name: str, **arguments: Any) -> tuple[Callable[..., Backbone], dict[str, Any]]:
    _import_backbone_modules()
    factory = _factory(name)
    chosen = {k: v for k, v in arguments.items() if v is not None and v != _DEFAULTS.get(k)}
    _check_accepted(name, factory, chosen)
    # A factory may say what it refuses before building (attribute `check_request`, called with the same arguments).
    check_request = getattr(factory, "check_request", None)
    if check_request is not None:
        check_request(name, **chosen)
    return factory, chosen


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered backbone names matching `pattern` (timm names and `random:<name>` work too but are not listed)."""
    _import_backbone_modules()
    return BACKBONES.list(pattern)


def _factory(name: str) -> Callable[..., Backbone]:
    try:
        return BACKBONES.get(name)
    except UnknownNameError:
        raise UnknownNameError(_unknown_message(name)) from None


def _unknown_message(name: str) -> str:
    import timm
    from timm.models import split_model_name_tag

    prefix = "random:" if name.startswith("random:") else ""
    arch, tag = split_model_name_tag(name.removeprefix(prefix))
    if tag and timm.is_model(arch):
        tags = [*BACKBONES.list(f"{arch}.*"), *timm.list_pretrained(f"{arch}.*")]
        close = difflib.get_close_matches(f"{arch}.{tag}", tags, n=5, cutoff=0.0)
        return (f"unknown backbone {name!r}: timm model {arch!r} has no pretrained tag {tag!r}; closest: "
                f"{', '.join(prefix + c for c in close) or 'none'}")
    known = [*BACKBONES.list(), *timm.list_models()]
    close = difflib.get_close_matches(name.removeprefix(prefix), known, n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(prefix + c for c in close)}?" if close else "see `unirep list backbones`"
    return f"unknown backbone {name!r} (not registered, not a timm model): {hint}"


def _check_accepted(name: str, factory: Callable[..., Backbone], chosen: Mapping[str, Any]) -> None:
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    refused = sorted(set(chosen) - set(params))
    if refused:
        takes = ", ".join(p for p in params if p != "name") or "nothing"
        raise ConfigError(f"backbone {name!r} does not take {', '.join(refused)} (it takes: {takes})")


def _import_backbone_modules() -> None:
    # Lazy: `import unirep.backbones` stays cheap, and timm is only imported when a backbone is asked for.
    for module in BACKBONE_MODULES:
        importlib.import_module(module)


__all__ = ["BACKBONES", "BACKBONE_MODULES", "Backbone", "DataConfig", "check_backbone", "create_backbone",
           "list_backbones", "register_backbone"]
