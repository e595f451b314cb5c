"""What every section of an inspection report reads: `InspectContext`.

A context holds one backbone on one task: the backbone itself, a differentiable `classifier` (normalisation +
backbone + the linear head of unirep's `linear` probe, fitted on the cached features with C chosen on val), the
task's images as [0, 1] pixels, the cached features `unirep eval` uses, and the selected layers with a way to read
their activation maps (`layer_maps`, `collect_maps`: ViT tokens come back reshaped to (B, C, h, w) maps).

Two ways to build one:
    >>> ctx = build_context(BackboneSpec(name="mobilenetv2_100.packaged_in1k"), "sklearn-digits", cfg)  # the CLI's
    >>> ctx = InspectContext.for_testing(backbone, images, labels)    # a tiny model and a few images (tests)

Layers: the default is the backbone's stages (timm's `feature_info`: the modules `forward_intermediates` reads), named
`stage<i>` (`net<j>.stage<i>` for a source checkpoint of several networks); timm's module names (`blocks.3`) and any
module path inside the backbone (`model.blocks.3.conv_pw`) are accepted too, like Lucent's / captum's layer handles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unirep.backbones.base import Backbone
from unirep.errors import ConfigError, DataError
from unirep.unit_stats import tokens_to_maps

SPLITS = ("train", "val", "test")


class Normalize(nn.Module):
    """[0, 1] pixels -> the backbone's input: (x - mean) / std with the backbone's data config."""

    def __init__(self, mean: Iterable[float], std: Iterable[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std


class ProbeClassifier(nn.Module):
    """[0, 1] pixels -> logits: `normalize`, `backbone`, then `head`, a Linear holding the probe's weights with its
    feature standardisation folded in (W / scale, b - W @ (mean / scale)), so the logits are the probe's own."""

    def __init__(self, normalize: Normalize, backbone: Backbone, head: nn.Linear):
        super().__init__()
        self.normalize, self.backbone, self.head = normalize, backbone, head

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.normalize(pixels)))


def linear_head_from_probe(probe: Any, num_classes: int) -> nn.Linear:
    """A torch Linear equal to a fitted `LinearProbe`'s decision function on raw features. Classes the probe never
    saw (absent from train+val) get a bias of -1e4, so they are never predicted, as by the probe."""
    coef = torch.as_tensor(np.asarray(probe.coef_, dtype=np.float64))
    scale = torch.as_tensor(np.asarray(probe.scale_, dtype=np.float64))
    mean = torch.as_tensor(np.asarray(probe.mean_, dtype=np.float64))
    weight = coef / scale
    bias = torch.as_tensor(np.asarray(probe.intercept_, dtype=np.float64)) - weight @ mean
    head = nn.Linear(coef.shape[1], num_classes)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-1e4)
        rows = torch.as_tensor(np.asarray(probe.classes_, dtype=np.int64))
        head.weight[rows] = weight.float()
        head.bias[rows] = bias.float()
    return head.requires_grad_(False)


@dataclass
class LayerInfo:
    """One selectable layer: `path` inside the backbone, the module, and how to turn its output into a map.

    prefix_tokens: for a ViT block, the class/register tokens before the patch tokens (dropped in the map);
    grid: the patch grid (h, w) of a ViT, None for modules whose output already is a (B, C, h, w) map.
    stage: the stage index of timm's `feature_info` it comes from (None for a module named by path).
    """

    name: str
    path: str
    module: nn.Module
    prefix_tokens: int = 0
    grid: tuple[int, int] | None = None
    stage: int | None = None
    reduction: int | None = None
    channels: int | None = None

    def as_map(self, output: Any) -> torch.Tensor:
        """The module's output as a (B, C, h, w) map: tokens (B, N, C) reshaped on the patch grid."""
        if isinstance(output, tuple | list):
            output = output[0]
        if output.ndim == 4:
            return output
        if output.ndim == 3:
            try:
                return tokens_to_maps(output, self.prefix_tokens, self.grid)
            except ValueError as exc:
                raise DataError(f"layer {self.name!r}: {exc}; name a layer with map outputs") from None
        if output.ndim == 2:
            return output[:, :, None, None]
        raise DataError(f"layer {self.name!r} gives outputs of shape {tuple(output.shape)}, not a map or tokens")


def stage_layers(backbone: nn.Module) -> dict[str, LayerInfo]:
    """The backbone's stages: every timm model inside it (the outermost ones) contributes its `feature_info`."""
    owners: list[tuple[str, nn.Module]] = []
    for path, module in backbone.named_modules():
        info = getattr(module, "feature_info", None)
        inside_owner = any(path.startswith(f"{p}.") or (p == "" and path) for p, _ in owners)
        if isinstance(info, list) and info and not inside_owner:
            owners.append((path, module))
    layers: dict[str, LayerInfo] = {}
    for j, (owner_path, owner) in enumerate(owners):
        prefix = getattr(owner, "num_prefix_tokens", 0) if _is_token_model(owner) else 0
        grid = tuple(owner.patch_embed.grid_size) if _is_token_model(owner) else None
        for i, info in enumerate(owner.feature_info):
            name = f"stage{i}" if len(owners) == 1 else f"net{j}.stage{i}"
            path = f"{owner_path}.{info['module']}" if owner_path else info["module"]
            layers[name] = LayerInfo(name, path, backbone.get_submodule(path), prefix, grid, i,
                                     info.get("reduction"), info.get("num_chs"))
    return layers


def _is_token_model(model: nn.Module) -> bool:
    # timm's VisionTransformer family: blocks return (B, prefix + h*w, C) token sequences.
    return hasattr(model, "patch_embed") and hasattr(model, "num_prefix_tokens") and hasattr(model.patch_embed,
                                                                                             "grid_size")


def select_layers(backbone: nn.Module, requested: list[str] | None, label: str) -> dict[str, LayerInfo]:
    """The requested layers (default: every stage). A name is a stage (`stage2`), timm's module name of a stage
    (`blocks.2`), or a module path inside the backbone; anything else is refused naming the valid stages."""
    stages = stage_layers(backbone)
    if not requested:
        return stages
    by_alias = {}
    for info in stages.values():
        by_alias[info.name] = info
        by_alias[info.path] = info
        by_alias[info.path.split(".", 1)[1] if "." in info.path else info.path] = info
    modules = dict(backbone.named_modules())
    chosen: dict[str, LayerInfo] = {}
    for name in requested:
        if name in by_alias:
            info = by_alias[name]
            chosen[info.name] = info
        elif name and name in modules:
            owner = next((s for s in stages.values() if name.startswith(s.path.rsplit(".", 1)[0])), None)
            prefix, grid = (owner.prefix_tokens, owner.grid) if owner else (0, None)
            chosen[name] = LayerInfo(name, name, modules[name], prefix, grid)
        else:
            valid = ", ".join(f"{s.name} (= {s.path})" for s in stages.values()) or "none (no stages)"
            raise ConfigError(f"backbone {label!r} has no layer {name!r}: valid layers are {valid}, or any module "
                              f"path inside the backbone (e.g. {next(iter(modules.keys() - {''}), 'model')})")
    return chosen


class _Stop(Exception):
    """Raised by a hook once every requested layer has been seen: the rest of the forward pass is not needed."""


@dataclass
class ContextData:
    """Where a context's images and features come from (a task through the feature cache, or arrays in a test)."""

    class_names: list[str]
    images: Callable[[str], tuple[torch.Tensor | None, Any, np.ndarray, list[str]]]
    features: Callable[[str], tuple[np.ndarray, np.ndarray]]
    object_masks: Callable[[list[str]], torch.Tensor | None] = lambda ids: None
    reference_backbones: Callable[[], dict[str, nn.Module]] = dict


@dataclass
class InspectContext:
    """One backbone on one task, as every section sees it (fields: /work/prompts/inspect_context.md).

    Fields beyond the shared interface: `n_images` (the --images budget sections draw from), `layer_info` (per
    selected layer: its path, token prefix and grid), `provenance` (backbone identity, task manifest, the probe's
    chosen C, val and test scores, and how often the classifier agrees with the probe on test), `data`.
    """

    label: str
    backbone: Backbone
    classifier: nn.Module
    normalize: Callable[[torch.Tensor], torch.Tensor]
    task_name: str
    class_names: list[str]
    input_size: int
    layers: dict[str, nn.Module]
    spatial: bool
    device: torch.device
    seed: int
    settings: dict[str, dict]
    out_dir: Path
    n_images: int = 64
    layer_info: dict[str, LayerInfo] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    probe: Any = field(default=None, repr=False)  # the fitted unirep probe `classifier`'s head was made from
    data: ContextData | None = field(default=None, repr=False)
    _pixel_cache: dict = field(default_factory=dict, repr=False)

    # ---- the shared interface -------------------------------------------------------------------------------
    def pixels(self, split: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """The first n (seeded, fixed) images of a split as float [0,1] (N,3,H,W) at input_size, labels (N,) long,
        example ids. split in {"train", "val", "test"}. The same n and seed give the same examples whatever the
        backbone (so `unirep inspect A B` compares the same images)."""
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        key = (split, n)
        if key not in self._pixel_cache:
            images, labels, ids = self._draw(split, n)
            self._pixel_cache[key] = (images, labels, ids)
        images, labels, ids = self._pixel_cache[key]
        return images.clone(), labels.clone(), list(ids)

    def features(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Cached (N, D) features and labels of a split (the same cache `unirep eval` uses)."""
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return self.data.features(split)

    def object_masks(self, ids: list[str]) -> torch.Tensor | None:
        """(N, H, W) bool masks of where the object is, when the task knows it (boxes); None otherwise (sections
        then use a centred-object prior and say so). No offline task has boxes yet: a task offers them with an
        `object_boxes(ids)` method (see `task_object_masks`)."""
        return self.data.object_masks(ids)

    def reference_backbones(self) -> dict[str, nn.Module]:
        """Same-architecture references for the filter noise score: {"random-init": ..., "trained": ...};
        "trained" present only where packaged ImageNet weights of that architecture exist."""
        return self.data.reference_backbones()

    # ---- activation maps ------------------------------------------------------------------------------------
    def layer_maps(self, pixels: torch.Tensor, names: Iterable[str] | None = None, *,
                   grad: bool = False) -> dict[str, torch.Tensor]:
        """(B, C, h, w) maps of the named layers (default: all selected) for one batch of [0, 1] pixels. With
        `grad` the maps stay on the autograd graph (gradients to the input); without, under no_grad. The forward
        pass stops after the last layer asked for."""
        names = list(self.layer_info if names is None else names)
        unknown = [n for n in names if n not in self.layer_info]
        if unknown:
            raise ConfigError(f"layer(s) {unknown} not selected for {self.label!r}: selected are "
                              f"{', '.join(self.layer_info)}")
        found: dict[str, torch.Tensor] = {}

        def hook(name: str):
            def record(_module, _inputs, output):
                found[name] = self.layer_info[name].as_map(output)
                if len(found) == len(names):
                    raise _Stop
            return record

        handles = [self.layer_info[n].module.register_forward_hook(hook(n)) for n in names]
        try:
            with torch.set_grad_enabled(grad):
                self.backbone(self.normalize(pixels.to(self.device)))
        except _Stop:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return {n: found[n] for n in names}

    def collect_maps(self, pixels: torch.Tensor, names: Iterable[str] | None = None, *,
                     reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     batch_size: int = 64) -> dict[str, torch.Tensor]:
        """`layer_maps` over a whole image set in batches (no grad), each batch's maps passed through `reduce`
        (e.g. a spatial max) before they are concatenated on the CPU."""
        names = list(self.layer_info if names is None else names)
        parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        for start in range(0, len(pixels), batch_size):
            maps = self.layer_maps(pixels[start:start + batch_size], names)
            for n in names:
                parts[n].append((reduce(maps[n]) if reduce else maps[n]).float().cpu())
        return {n: torch.cat(parts[n]) if parts[n] else torch.empty(0) for n in names}

    def section_settings(self, section: str, defaults: dict[str, Any]) -> dict[str, Any]:
        """`defaults` updated by the user's `section.key=value` overrides; unknown keys are refused in one line."""
        given = dict(self.settings.get(section, {}))
        unknown = sorted(set(given) - set(defaults))
        if unknown:  # the command refuses these before any work (check_section_settings); contexts built in code too
            raise ConfigError(f"section {section!r} has no setting(s) {unknown}: its settings are "
                              f"{', '.join(f'{k}={v!r}' for k, v in defaults.items())}")
        return {**defaults, **given}

    # ---- construction -----------------------------------------------------------------------------------------
    def _draw(self, split: str, n: int | None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        images, image_set, labels, ids = self.data.images(split)
        order = np.random.default_rng(self.seed).permutation(len(ids))
        chosen = np.sort(order[: len(ids) if n is None else min(n, len(ids))])
        if images is not None:
            return images[chosen].float(), torch.as_tensor(labels[chosen]).long(), [ids[i] for i in chosen]
        from unirep.features import image_batches

        batches = image_batches(image_set.subset(chosen), self.backbone.data_config, batch_size=256)
        pixels = torch.cat([b.float() / 255.0 for b in batches]) if len(chosen) else torch.zeros(0, 3, 1, 1)
        return pixels, torch.as_tensor(labels[chosen]).long(), [ids[i] for i in chosen]

    @classmethod
    def for_testing(cls, backbone: Backbone, images: torch.Tensor, labels: torch.Tensor | np.ndarray, *,
                    classifier: nn.Module | None = None, class_names: list[str] | None = None,
                    layers: list[str] | None = None, splits: dict[str, tuple[torch.Tensor, Any]] | None = None,
                    out_dir: str | Path = ".", seed: int = 0, settings: dict[str, dict] | None = None,
                    n_images: int = 64, label: str | None = None,
                    references: dict[str, nn.Module] | None = None) -> InspectContext:
        """A context over in-memory images (tests, notebooks): `images` (N, 3, H, W) in [0, 1] serve every split
        unless `splits` gives {"train": (images, labels), ...}. Features are the backbone's on those images (no
        cache). Without `classifier`, unirep's linear probe is fitted on train features, C chosen on val (a
        5-point grid: tests stay fast), and wrapped as `build_context` does."""
        backbone = backbone.eval()
        labels = torch.as_tensor(np.asarray(labels)).long()
        by_split = {s: (images, labels) for s in SPLITS}
        by_split.update({s: (x, torch.as_tensor(np.asarray(y)).long()) for s, (x, y) in (splits or {}).items()})
        dc = backbone.data_config
        normalize = Normalize(dc.mean, dc.std)
        ids = {s: [f"{s}-{i}" for i in range(len(x))] for s, (x, _) in by_split.items()}
        feats: dict[str, tuple[np.ndarray, np.ndarray]] = {}

        def features(split: str) -> tuple[np.ndarray, np.ndarray]:
            if split not in feats:
                x, y = by_split[split]
                with torch.no_grad():
                    out = torch.cat([backbone(normalize(x[i:i + 64])) for i in range(0, len(x), 64)])
                feats[split] = (out.float().numpy(), y.numpy())
            return feats[split]

        num_classes = len(class_names) if class_names else int(max(int(y.max()) for _, y in by_split.values())) + 1
        names = class_names or [str(i) for i in range(num_classes)]
        provenance: dict[str, Any] = {"backbone": backbone.identity(), "task": {"name": "in-memory"}}
        if classifier is None:
            from unirep.metrics import Metric
            from unirep.probes import FeatureSplit, create_probe
            from unirep.probes.linear import c_grid

            probe = create_probe("linear", Cs=list(c_grid(-4, 2, 5)))
            probe.select(FeatureSplit(*features("train")), FeatureSplit(*features("val")), Metric.TOP1)
            classifier = ProbeClassifier(normalize, backbone, linear_head_from_probe(probe, num_classes)).eval()
            provenance["probe"] = {"name": "linear", **dict(probe.selected_params_)}
        else:
            probe = None
        data = ContextData(
            class_names=names,
            images=lambda s: (by_split[s][0], None, by_split[s][1].numpy(), ids[s]),
            features=features,
            reference_backbones=lambda: dict(references or {}),
        )
        selected = select_layers(backbone, layers, label or backbone.name)
        return cls(label=label or backbone.name, backbone=backbone, classifier=classifier, normalize=normalize,
                   task_name="in-memory", class_names=names, input_size=int(images.shape[-1]),
                   layers={n: i.module for n, i in selected.items()}, spatial=bool(selected),
                   device=torch.device("cpu"), seed=seed, settings=dict(settings or {}), out_dir=Path(out_dir),
                   n_images=n_images, layer_info=selected, provenance=provenance, data=data, probe=probe)


def build_context(spec: Any, task_name: str, cfg: Any, *, layers: list[str] | None = None,
                  out_dir: str | Path = ".", seed: int = 0, settings: dict[str, dict] | None = None,
                  n_images: int = 64, check_layers: Callable[[str, bool], None] | None = None) -> InspectContext:
    """The context of backbone `spec` (a `unirep.config.BackboneSpec`) on task `task_name`, the way `unirep eval`
    sees them: the backbone built by `unirep.evaluate.build_backbone` (its input size capped by
    `cfg.max_input_size`), features read from (or extracted into) the feature cache `cfg.cache_dir`, and unirep's
    registered `linear` probe with the `cfg.linear` C grid, chosen on val, refit on train+val. The probe's test
    predictions (on the cached test features) are recorded, and how often the differentiable classifier's argmax
    on the test pixels agrees with them (`provenance["classifier_agreement"]`). `check_layers(label, spatial)` is
    called once the layers are known, before any extraction (the CLI refuses sections that cannot apply there)."""
    from unirep.evaluate import build_backbone, extraction_settings
    from unirep.features import FeatureCache
    from unirep.metrics import Metric
    from unirep.probes import FeatureSplit, SealedSplit
    from unirep.protocols import build_probe
    from unirep.tasks import create_task

    task = create_task(task_name)
    metric = Metric(task.card.metric)
    if task.card.multilabel or metric.needs_scores:
        raise ConfigError(f"task {task_name!r} is multi-label: unirep inspect explains single-label decisions "
                          "(choose a single-label task, see `unirep list tasks`)")
    label = spec.display_name
    backbone = build_backbone(spec, cfg)
    selected = select_layers(backbone, layers, label)  # a bad --layers name fails before any extraction
    if check_layers is not None:
        check_layers(label, bool(selected))
    extraction = extraction_settings(cfg)
    cache = FeatureCache(cfg.cache_dir)
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in found:
            got = cache.get_or_extract(backbone, task.manifest, split, task.split(split), extraction)
            found[split] = (got.features, got.labels)
        return found[split]

    probe = build_probe("linear", cfg)
    probe.select(FeatureSplit(*features("train")), FeatureSplit(*features("val")), metric)
    test_X, test_y = features("test")
    test = SealedSplit(test_X, test_y).evaluate(probe, metric)
    device = extraction.resolved_device()
    backbone = backbone.eval().to(device=device, memory_format=torch.contiguous_format).requires_grad_(False)
    dc = backbone.data_config
    normalize = Normalize(dc.mean, dc.std).to(device)
    classifier = ProbeClassifier(normalize, backbone, linear_head_from_probe(probe, task.card.num_classes))
    classifier = classifier.to(device).eval()
    data = ContextData(
        class_names=list(task.card.classes) or [str(i) for i in range(task.card.num_classes)],
        images=lambda s: (None, task.split(s), np.asarray(task.split(s).labels), list(task.split(s).ids)),
        features=features,
        object_masks=lambda ids: task_object_masks(task, ids, dc.input_size),
        reference_backbones=lambda: reference_backbones(backbone, seed),
    )
    ctx = InspectContext(
        label=label, backbone=backbone, classifier=classifier, normalize=normalize, task_name=task.name,
        class_names=data.class_names, input_size=dc.input_size, layers={n: i.module for n, i in selected.items()},
        spatial=bool(selected), device=device, seed=seed, settings=dict(settings or {}), out_dir=Path(out_dir),
        n_images=n_images, layer_info=selected, data=data, probe=probe,
        provenance={
            "backbone": {"spec": {k: getattr(spec, k) for k in spec.__dataclass_fields__}, **backbone.identity()},
            "task": task.manifest.summary(),
            "probe": {"name": "linear", "metric": metric.value, **_json_safe(dict(probe.selected_params_)),
                      "val_score": float(probe.val_score_), "test_score": float(test.score)},
        },
    )
    ctx.provenance["classifier_agreement"] = classifier_agreement(ctx, probe.predict(test_X), n_images)
    return ctx


def classifier_agreement(ctx: InspectContext, probe_predictions: np.ndarray, n: int) -> dict[str, Any]:
    """Share of the first `n` test images (seeded draw) where the classifier's argmax on pixels equals the probe's
    prediction on the cached features: the check that `classifier` is the probe (float32 and channels-last
    extraction leave a few near-ties to chance)."""
    pixels, _, ids = ctx.pixels("test", n)
    order = {example: i for i, example in enumerate(ctx.data.images("test")[3])}
    with torch.no_grad():
        logits = torch.cat([ctx.classifier(pixels[i:i + 64].to(ctx.device)).cpu() for i in range(0, len(pixels), 64)])
    expected = np.asarray(probe_predictions)[[order[i] for i in ids]]
    agree = float(np.mean(logits.argmax(1).numpy() == expected)) if len(ids) else float("nan")
    return {"images": len(ids), "share": agree, "split": "test"}


def task_object_masks(task: Any, ids: list[str], size: int) -> torch.Tensor | None:
    """(N, size, size) masks from a task's `object_boxes(ids)` ((N, 4) boxes x0, y0, x1, y1 as fractions of the
    image side, after the centre crop); None when the task has no boxes (every offline task, today)."""
    boxes_of = getattr(task, "object_boxes", None)
    if boxes_of is None:
        return None
    boxes = np.asarray(boxes_of(ids), dtype=np.float64)
    masks = torch.zeros(len(ids), size, size, dtype=torch.bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
        mask[int(y0 * size):max(int(math.ceil(y1 * size)), int(y0 * size) + 1),
             int(x0 * size):max(int(math.ceil(x1 * size)), int(x0 * size) + 1)] = True
    return masks


def reference_backbones(backbone: Backbone, seed: int) -> dict[str, nn.Module]:
    """Same architecture, untrained (seeded random init) and, where unirep ships them, packaged ImageNet weights.

    A timm backbone gives `random:<arch>` and `<arch>.packaged_*`; a source checkpoint its networks rebuilt with
    random weights. Other backbones (raw pixels) have no reference: {}."""
    from unirep.backbones import create_backbone, list_backbones

    size = backbone.data_config.input_size
    model = getattr(backbone, "model", None)
    if model is not None and getattr(model, "pretrained_cfg", None):
        arch = model.pretrained_cfg.get("architecture") or backbone.name.removeprefix("random:").split(".")[0]
        references: dict[str, nn.Module] = {"random-init": create_backbone(f"random:{arch}", input_size=size,
                                                                             seed=seed)}
        packaged = list_backbones(f"{arch}.packaged*")
        if packaged:
            references["trained"] = create_backbone(packaged[0], input_size=size)
        return {k: v.eval().requires_grad_(False) for k, v in references.items()}
    networks = getattr(backbone, "networks", None)
    if networks is not None:
        from unirep.backbones.source_networks import SourceNetwork

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return {"random-init": nn.ModuleList(SourceNetwork(net.spec) for net in networks).eval()}
    return {}


def _json_safe(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        out[key] = value
    return out


__all__ = ["ContextData", "InspectContext", "LayerInfo", "Normalize", "ProbeClassifier", "build_context",
           "linear_head_from_probe", "reference_backbones", "select_layers", "stage_layers", "task_object_masks"]
