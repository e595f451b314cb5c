"""Unit-level diagnostics shared by training (a Lightning callback) and `unirep inspect`: dead and dormant units,
activation histograms, and a noise score for convolution filters. Plain torch/numpy/timm, nothing of unirep above.

Dead units (ReLU/ReLU6 networks). Forward hooks sit on the activation modules themselves, found by type
(`RECTIFIERS`, `SMOOTH_ACTIVATIONS`), never by name: timm stage outputs are often linear bottlenecks or SiLU and
are never exactly zero. A channel is *dead on an input* when its whole activation map is exactly zero (its
pre-activation was <= 0 everywhere); it is *dead* when that holds on at least `dead_quantile` (default 99 %) of
the inputs measured. Only rectifiers produce exact zeros, so the dead share is reported for them alone.

Dormant units (any activation; Sokar et al. 2023, "The dormant neuron phenomenon in deep RL"): a unit's score is
its mean |activation| (over inputs and positions) divided by the mean of that over its layer's units; the unit
is dormant when its score <= tau. tau = 0 counts units that never fire on the inputs measured; tau = 0.1 is the
paper's looser threshold. For SiLU/GELU networks this is the only one of the two that applies.

Layouts: CNN maps (B, C, H, W); ViT tokens (B, N, C), prefix (class/register) tokens dropped and the patch
tokens reshaped to (B, C, h, w) on the patch grid; channels-last maps (B, H, W, C) where the activation is fed
by a Linear/LayerNorm (ConvNeXt/Swin MLPs); vectors (B, C) as 1 x 1 maps. Stages come from timm's
`feature_info` (an activation belongs to the first stage output at or after it, `head` after the last).

Filter noise score (see `filter_noise_scores`): the share of a filter's spatial energy above half the Nyquist
frequency (white noise ~0.8, smooth filters near 0).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

try:  # timm's own activation classes (not nn subclasses of the torch ones)
    from timm.layers import activations as _timm_act
    from timm.layers import activations_me as _timm_act_me

    _TIMM_SMOOTH = (_timm_act.GELU, _timm_act.GELUTanh, _timm_act.QuickGELU, _timm_act.Swish, _timm_act.Mish,
                    _timm_act.HardSwish, _timm_act.HardMish, _timm_act.PReLU, _timm_act_me.SwishMe,
                    _timm_act_me.MishMe, _timm_act_me.HardSwishMe, _timm_act_me.HardMishMe)
except ImportError:  # pragma: no cover - timm is a core dependency
    _TIMM_SMOOTH = ()

RECTIFIERS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
SMOOTH_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.SiLU, nn.GELU, nn.Hardswish, nn.Mish, nn.ELU, nn.CELU, nn.SELU,
                                                    nn.LeakyReLU, nn.PReLU, nn.Softplus, *_TIMM_SMOOTH)
# Gates (sigmoid/tanh in squeeze-excite, attention) are multiplicative weights, not units: not hooked.
DEFAULT_DEAD_QUANTILE = 0.99
DEFAULT_DORMANT_TAUS = (0.0, 0.1)
HEAD_STAGE = "head"


def activation_kind(module: nn.Module) -> str | None:
    """"rectifier" (exact zeros: dead share and dormant ratio), "smooth" (dormant ratio only) or None."""
    if isinstance(module, RECTIFIERS):
        return "rectifier"
    if isinstance(module, SMOOTH_ACTIVATIONS):
        return "smooth"
    return None


# ----------------------------------------------------------------------------------------------- layouts


def tokens_to_maps(tokens: torch.Tensor, num_prefix_tokens: int = 0,
                   grid: tuple[int, int] | None = None) -> torch.Tensor:
    """ViT tokens (B, N, C) -> (B, C, h, w): the first `num_prefix_tokens` (class/register tokens) dropped, the
    patch tokens laid out row-major on `grid` (default: a square grid)."""
    patches = tokens[:, num_prefix_tokens:, :]
    n = patches.shape[1]
    if grid is None:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"{n} patch tokens do not form a square grid: pass the patch grid (h, w)")
        grid = (side, side)
    if grid[0] * grid[1] != n:
        raise ValueError(f"{n} patch tokens do not fill a {grid[0]} x {grid[1]} grid")
    return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], *grid)


@dataclass(frozen=True)
class ActivationLayer:
    """One hooked activation module: its name inside the model, stage, kind and how its output is laid out."""

    name: str
    stage: str
    kind: str  # rectifier | smooth
    module_type: str
    layout: str  # "channels_last" when fed by a Linear/LayerNorm (tokens, ConvNeXt MLPs), else "channels_first"


def to_channel_maps(output: torch.Tensor, channels_last: bool, num_prefix_tokens: int = 0,
                    grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Any activation output as (B, C, H, W) maps: vectors become 1 x 1 maps, tokens are reshaped."""
    if output.dim() == 2:
        return output[:, :, None, None]
    if output.dim() == 3:  # tokens; a grid mismatch (e.g. pooled tokens) keeps them as a 1 x N strip
        patches = output[:, num_prefix_tokens:, :]
        if grid is not None and grid[0] * grid[1] == patches.shape[1]:
            return tokens_to_maps(output, num_prefix_tokens, grid)
        return patches.transpose(1, 2)[:, :, None, :]
    if output.dim() == 4:
        return output.permute(0, 3, 1, 2) if channels_last else output
    raise ValueError(f"activation output of shape {tuple(output.shape)} is not a map, tokens or a vector")


def _feeds_channels_last(model: nn.Module, name: str) -> bool:
    """Whether a 4-D output of activation `name` is channels-last: it is when the layer feeding it (its previous
    sibling) is a Linear or LayerNorm (ConvNeXt/Swin MLPs), not when it is a conv or a BatchNorm (or the
    activation lives inside a BatchNorm+act module, as timm's BatchNormAct2d)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, nn.modules.batchnorm._BatchNorm):
        return False
    previous = None
    for sibling_name, sibling in parent.named_children():
        if sibling_name == child:
            break
        previous = sibling
    return isinstance(previous, nn.Linear | nn.LayerNorm)


def _token_geometry(model: nn.Module) -> tuple[int, tuple[int, int] | None]:
    """(prefix tokens, patch grid) of a ViT-like model (timm's attributes), (0, None) for anything else."""
    for module in model.modules():
        patch_embed = getattr(module, "patch_embed", None)
        if patch_embed is not None and hasattr(patch_embed, "grid_size"):
            return int(getattr(module, "num_prefix_tokens", 0)), tuple(int(g) for g in patch_embed.grid_size)
    return 0, None


# ----------------------------------------------------------------------------------------------- stages


def _feature_info_owners(model: nn.Module) -> list[tuple[str, list[str]]]:
    """(path, full names of its stage-output modules) of every outermost submodule carrying timm's `feature_info`
    (one for a timm backbone, one per network for a source checkpoint of several), in module order."""
    owners: list[tuple[str, list[str]]] = []
    for prefix, module in model.named_modules():
        if any(prefix.startswith(f"{path}.") or (path == "" and prefix) for path, _ in owners):
            continue
        info = getattr(module, "feature_info", None)
        entries = info.get_dicts() if hasattr(info, "get_dicts") else info
        if isinstance(entries, list) and entries and all(isinstance(e, dict) and "module" in e for e in entries):
            owners.append((prefix, [f"{prefix}.{e['module']}" if prefix else e["module"] for e in entries]))
    return owners


def stage_boundaries(model: nn.Module) -> list[str]:
    """Full names of the modules whose outputs timm declares as stage outputs (`feature_info`), in order; empty
    when no submodule has them."""
    return [name for _, names in _feature_info_owners(model) for name in names]


def assign_stages(model: nn.Module, names: Sequence[str]) -> dict[str, str]:
    """Stage of each module name: the first stage output of its timm model at or after it in module order (its
    own subtree included), `head` after the last one and for what follows the model (a source network's feature
    layer); with several timm models inside (a source checkpoint of several networks), the head of each is
    `<its parent>.head`. Without feature_info, the module's top-level child (plus its index inside a
    `blocks`/`stages`/`layers`/`features` list)."""
    order = {name: index for index, (name, _) in enumerate(model.named_modules())}
    owners = [(path, [b for b in bounds if b in order]) for path, bounds in _feature_info_owners(model)]
    owners = [(path, bounds) for path, bounds in owners if bounds]

    def head_of(path: str) -> str:
        return HEAD_STAGE if len(owners) == 1 else f"{path.rpartition('.')[0] or path}.{HEAD_STAGE}"

    stages = {}
    for name in names:
        before = [(path, bounds) for path, bounds in owners if order[path] <= order[name]]
        if before:
            path, bounds = before[-1]
            inside = name == path or name.startswith(path + ".") or path == ""
            stages[name] = next((b for b in bounds if name == b or name.startswith(b + ".") or order[name] < order[b]),
                                head_of(path)) if inside else head_of(path)
        elif owners:  # before the first timm model (e.g. a wrapper's own stem): the first stage
            stages[name] = owners[0][1][0]
        else:
            parts = name.split(".")
            stage = parts[0] if len(parts) > 1 else HEAD_STAGE
            if parts[0] in ("blocks", "stages", "layers", "features") and len(parts) > 2 and parts[1].isdigit():
                stage = f"{parts[0]}.{parts[1]}"
            stages[name] = stage
    return stages


def activation_layers(model: nn.Module) -> list[ActivationLayer]:
    """Every activation module of `model` that `activation_kind` knows, in module order."""
    found = [(name, module) for name, module in model.named_modules() if activation_kind(module) is not None]
    stages = assign_stages(model, [name for name, _ in found])
    return [ActivationLayer(name, stages[name], activation_kind(module), type(module).__name__,
                            "channels_last" if _feeds_channels_last(model, name) else "channels_first")
            for name, module in found]


# ----------------------------------------------------------------------------------------------- statistics


@dataclass
class _Accumulator:
    """Running sums for one activation call site (a module called twice per forward has two)."""

    inputs: int = 0
    zero_maps: torch.Tensor | None = None  # (C,) inputs on which the channel's map was exactly zero
    abs_sum: torch.Tensor | None = None  # (C,) float64 sum of |activation| over inputs and positions
    positions: int = 0  # positions per channel summed so far (inputs x H x W)
    samples: list[torch.Tensor] = field(default_factory=list)
    sampled: int = 0
    spatial: tuple[int, int] = (1, 1)

    def add(self, maps: torch.Tensor, sample_budget: int, generator: torch.Generator) -> None:
        maps = maps.detach().float()
        b, c, h, w = maps.shape
        flat = maps.reshape(b, c, h * w)
        zero = (flat == 0).all(dim=2).sum(dim=0)
        abs_sum = flat.abs().sum(dim=(0, 2), dtype=torch.float64)
        if self.zero_maps is None:
            self.zero_maps, self.abs_sum = zero.cpu(), abs_sum.cpu()
        else:
            self.zero_maps += zero.cpu()
            self.abs_sum += abs_sum.cpu()
        self.inputs += b
        self.positions += b * h * w
        self.spatial = (h, w)
        if self.sampled < sample_budget:  # a seeded random subset of the values, for the histograms
            take = min(sample_budget - self.sampled, flat.numel())
            index = torch.randint(flat.numel(), (take,), generator=generator)
            self.samples.append(flat.reshape(-1)[index.to(flat.device)].cpu())
            self.sampled += take


@dataclass
class LayerUnitStats:
    """What was measured at one activation call site."""

    name: str
    stage: str
    kind: str
    module_type: str
    channels: int
    inputs: int
    map_size: tuple[int, int]
    zero_fraction: np.ndarray  # (C,) share of inputs on which the channel's map was exactly zero
    mean_abs: np.ndarray  # (C,) mean |activation| over inputs and positions
    samples: np.ndarray  # a random subset of the activation values (histograms)

    def dead(self, quantile: float) -> np.ndarray | None:
        """(C,) bool: map zero on >= quantile of the inputs; None for smooth activations (no exact zeros)."""
        if self.kind != "rectifier":
            return None
        return self.zero_fraction >= quantile

    def dormant_scores(self) -> np.ndarray:
        return dormant_scores(self.mean_abs)


def dormant_scores(mean_abs: np.ndarray) -> np.ndarray:
    """Sokar et al.'s score per unit: mean |activation| / the layer's mean of it (all 0 when the layer is silent)."""
    layer_mean = float(np.mean(mean_abs))
    return np.zeros_like(mean_abs) if layer_mean == 0 else mean_abs / layer_mean


def dead_share(zero_fraction: np.ndarray, quantile: float = DEFAULT_DEAD_QUANTILE) -> float:
    return float(np.mean(zero_fraction >= quantile))


def dormant_ratio(mean_abs: np.ndarray, tau: float) -> float:
    return float(np.mean(dormant_scores(mean_abs) <= tau))


class UnitStatsRecorder:
    """Forward hooks on every activation module of `model`, accumulating per-channel statistics over all
    forwards while active. Use as a context manager (hooks are removed on exit), then `results()`.

    Example:
        >>> with UnitStatsRecorder(model) as recorder:
        ...     for batch in batches:
        ...         model(batch)
        >>> summary = summarize(recorder.results())
    """

    def __init__(self, model: nn.Module, layers: Iterable[ActivationLayer] | None = None,
                 histogram_samples: int = 20_000, seed: int = 0):
        self.model = model
        self.layers = list(layers) if layers is not None else activation_layers(model)
        self.histogram_samples = histogram_samples
        self.generator = torch.Generator().manual_seed(seed)
        self.num_prefix_tokens, self.grid = _token_geometry(model)
        self._accumulators: dict[str, _Accumulator] = {}
        self._site_layer: dict[str, ActivationLayer] = {}
        self._calls: dict[str, int] = {}
        self._handles: list = []

    def __enter__(self) -> UnitStatsRecorder:
        self._handles.append(self.model.register_forward_pre_hook(lambda *_: self._calls.clear()))
        for layer in self.layers:
            module = self.model.get_submodule(layer.name)
            self._handles.append(module.register_forward_hook(self._hook(layer)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, layer: ActivationLayer):
        def hook(module, inputs, output):
            # A module called several times per forward (torchvision's shared ReLU) is one call site per call.
            call = self._calls.get(layer.name, 0)
            self._calls[layer.name] = call + 1
            site = layer.name if call == 0 else f"{layer.name}#{call + 1}"
            self._site_layer.setdefault(site, layer)
            maps = to_channel_maps(output, layer.layout == "channels_last", self.num_prefix_tokens, self.grid)
            self._accumulators.setdefault(site, _Accumulator()).add(maps, self.histogram_samples, self.generator)
        return hook

    def results(self) -> list[LayerUnitStats]:
        out = []
        for site, acc in self._accumulators.items():
            layer = self._site_layer[site]
            out.append(LayerUnitStats(
                site, layer.stage, layer.kind, layer.module_type, int(acc.zero_maps.numel()), acc.inputs,
                acc.spatial, (acc.zero_maps.double() / acc.inputs).numpy(),
                (acc.abs_sum / acc.positions).numpy(), torch.cat(acc.samples).numpy() if acc.samples else np.zeros(0)))
        return out


@torch.no_grad()
def measure_unit_stats(model: nn.Module, batches: Iterable[torch.Tensor], histogram_samples: int = 20_000,
                       seed: int = 0) -> list[LayerUnitStats]:
    """Run `model` (in eval mode, restored after) on every batch with the hooks on; the per-site statistics."""
    was_training = model.training
    model.eval()
    try:
        with UnitStatsRecorder(model, histogram_samples=histogram_samples, seed=seed) as recorder:
            for batch in batches:
                model(batch)
    finally:
        model.train(was_training)
    return recorder.results()


def summarize(stats: Sequence[LayerUnitStats], dead_quantile: float = DEFAULT_DEAD_QUANTILE,
              dormant_taus: Sequence[float] = DEFAULT_DORMANT_TAUS, histogram_bins: int = 40) -> dict:
    """JSON-able per-layer and per-stage numbers, with the thresholds that produced them.

    Per stage, the dead share is over the channels of its rectifier sites (None when it has none) and the dormant
    ratio over all its sites' channels (each unit scored within its own layer)."""
    taus = [float(t) for t in dormant_taus]
    layers, stages = [], {}
    for s in stats:
        dead = s.dead(dead_quantile)
        scores = s.dormant_scores()
        row = {"name": s.name, "stage": s.stage, "kind": s.kind, "module_type": s.module_type,
               "channels": s.channels, "inputs": s.inputs, "map_size": list(s.map_size),
               "dead_share": None if dead is None else float(dead.mean()),
               "dead_channels": None if dead is None else [int(i) for i in np.flatnonzero(dead)],
               "dormant_ratio": {str(t): float(np.mean(scores <= t)) for t in taus}}
        layers.append(row)
        st = stages.setdefault(s.stage, {"channels": 0, "rectifier_channels": 0, "dead": 0,
                                         "dormant": dict.fromkeys(taus, 0), "samples": []})
        st["channels"] += s.channels
        if dead is not None:
            st["rectifier_channels"] += s.channels
            st["dead"] += int(dead.sum())
        for t in taus:
            st["dormant"][t] += int(np.sum(scores <= t))
        st["samples"].append(s.samples)
    stage_rows = {}
    for name, st in stages.items():
        samples = np.concatenate(st["samples"]) if st["samples"] else np.zeros(0)
        stage_rows[name] = {
            "channels": st["channels"], "rectifier_channels": st["rectifier_channels"],
            "dead_share": st["dead"] / st["rectifier_channels"] if st["rectifier_channels"] else None,
            "dormant_ratio": {str(t): st["dormant"][t] / st["channels"] for t in taus},
            "histogram": histogram(samples, histogram_bins)}
    kinds = {s.kind for s in stats}
    rect = [r for r in layers if r["dead_share"] is not None]
    return {
        "settings": {"dead_quantile": dead_quantile, "dormant_taus": taus, "histogram_bins": histogram_bins,
                     "dead_definition": "channel map exactly zero on >= dead_quantile of inputs (rectifiers only)",
                     "dormant_definition": "mean|a| / layer mean of mean|a| <= tau (Sokar et al. 2023)"},
        "activation_kinds": sorted(kinds),
        "dead_share_applies": "rectifier" in kinds,
        "overall_dead_share": (sum(r["channels"] * r["dead_share"] for r in rect) / sum(r["channels"] for r in rect)
                               if rect else None),
        "layers": layers, "stages": stage_rows}


def histogram(values: np.ndarray, bins: int) -> dict:
    """Counts and edges over the values' 0.1-99.9 % range (a few extreme values must not squash the rest)."""
    if values.size == 0:
        return {"counts": [], "edges": [], "zero_share": None}
    low, high = np.percentile(values, [0.1, 99.9])
    if high <= low:
        high = low + 1e-6
    counts, edges = np.histogram(np.clip(values, low, high), bins=bins, range=(float(low), float(high)))
    return {"counts": counts.tolist(), "edges": [float(e) for e in edges], "zero_share": float(np.mean(values == 0))}


# ----------------------------------------------------------------------------------------------- filters

NOISE_CUTOFF = 0.25  # cycles per pixel: half the Nyquist frequency
NOISE_PAD = 32  # DFT size the k x k filter is zero-padded to (a fine sampling of its continuous spectrum)


@functools.lru_cache(maxsize=32)
def _high_band_matrix(kh: int, kw: int, cutoff: float = NOISE_CUTOFF, pad: int = NOISE_PAD) -> torch.Tensor:
    """M (kh*kw, kh*kw) with w^T M w = (energy of the padded DFT of w at radial frequency > cutoff) / pad^2, so
    that by Parseval the high-band share of w is w^T M w / |w|^2."""
    basis = torch.eye(kh * kw, dtype=torch.float64).reshape(kh * kw, kh, kw)
    spectra = torch.fft.fft2(basis, s=(pad, pad))  # (k2, pad, pad)
    f = torch.fft.fftfreq(pad, dtype=torch.float64)
    high = (f[:, None] ** 2 + f[None, :] ** 2).sqrt() > cutoff
    selected = spectra[:, high]  # (k2, |H|)
    return (selected @ selected.conj().T).real / pad**2


def filter_noise_scores(weight: torch.Tensor, cutoff: float = NOISE_CUTOFF) -> np.ndarray:
    """Noise score of each filter of a conv weight (O, I, kh, kw), in [0, 1]: the share of its spatial energy
    above `cutoff` cycles/pixel (default: half the Nyquist frequency), summed over its input channels, measured
    on the 2-D DFT of the filter zero-padded to 32 x 32 (by Parseval, high-band energy / total energy).

    Why this definition: trained early filters are smooth (colour blobs, edges, Gabor-like ramps at the scale of
    the kernel) and put most of their energy at low frequencies; i.i.d. noise (an untrained init, or a filter
    that training has barely moved) has a flat spectrum, so ~0.8 of its energy lies above the cutoff (the share
    of the frequency plane there). Measured: white-noise 3 x 3 and 7 x 7 filters ~0.81, a 3 x 3 Gaussian 0.18,
    a 7 x 7 Gaussian (sigma 1.5) 0.004, a [-1, 0, 1] ramp 0.64; MobileNetV2's first layer: random init median
    0.84, packaged ImageNet weights 0.65. Zero-padding samples the filter's continuous spectrum: the 3 x 3 DFT
    alone has only the frequencies 0 and +-1/3. The mean is *not* removed: within a 3 x 3 window a smooth blob
    minus its mean is a centre-surround (Laplacian-like) pattern and would score as noisy as noise (tried: 0.95
    for the Gaussian). An all-zero filter scores 0. 1 x 1 kernels have no spatial structure and no score
    (ValueError).
    """
    if weight.dim() != 4:
        raise ValueError(f"expected a conv weight (O, I, kh, kw), got shape {tuple(weight.shape)}")
    o, i, kh, kw = weight.shape
    if kh * kw == 1:
        raise ValueError("1 x 1 kernels have no spatial structure: no noise score")
    slices = weight.detach().to(torch.float64).cpu().reshape(o, i, kh * kw)
    matrix = _high_band_matrix(kh, kw, cutoff)
    high = torch.einsum("oix,xy,oiy->o", slices, matrix, slices)
    total = (slices**2).sum(dim=(1, 2))
    scores = torch.where(total > 0, high / total.clamp_min(1e-300), torch.zeros_like(total))
    return scores.clamp(0, 1).numpy()


def spatial_convs(model: nn.Module) -> tuple[list[tuple[str, nn.Conv2d]], list[str]]:
    """(conv layers with a spatial kernel, names of the 1 x 1 convs), in module order."""
    convs = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    spatial = [(name, conv) for name, conv in convs if conv.kernel_size[0] * conv.kernel_size[1] > 1]
    pointwise = [name for name, conv in convs if conv.kernel_size[0] * conv.kernel_size[1] == 1]
    return spatial, pointwise


def first_layer_noise_score(model: nn.Module) -> float | None:
    """Median noise score of the first conv with a spatial kernel (a ViT's patch embedding counts); None when the
    model has none."""
    spatial, _ = spatial_convs(model)
    return float(np.median(filter_noise_scores(spatial[0][1].weight))) if spatial else None


def reference_position(value: float, untrained: float, trained: float) -> float | None:
    """Where `value` lies on the line untrained (0) -> trained (1); None when the two references coincide."""
    span = trained - untrained
    return None if abs(span) < 1e-12 else (value - untrained) / span + 0.0  # + 0.0: no "-0.00" in a report
