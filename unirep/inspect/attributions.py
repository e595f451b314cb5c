"""Attributions next to occlusion, and whether they depend on the weights at all.

Through captum: Integrated Gradients (Sundararajan et al. 2017) of the predicted class's probability, from a black
baseline in `n_steps` Gauss-Legendre steps, summed over colour channels; LayerGradCam (Selvaraju et al. 2017) of the
predicted class's logit at the last selected layer with spatial maps, ReLU'd and upsampled (bilinear) to the image.
Both are set beside the occlusion maps of `unirep.inspect.occlusion` (the same images and targets), with the share
of each on the object region, their deletion/insertion areas and their rank agreement with each other.

The model-randomisation sanity check (Adebayo et al. 2018): a deep copy of the classifier has its weights
re-initialised cascading from the top (the probe head and everything above the last selected layer first, then
down to each selected layer in turn, finally every layer), each parametrised module by its own `reset_parameters`
(seeded; BatchNorm statistics reset too). The maps of the randomised copies for the original targets are compared
with the trained model's by Spearman rank correlation (of |map|, and signed) and SSIM (of |map| / max |map|):
attributions that explain the model must change when its weights are destroyed; the section says whether they did.
"""

from __future__ import annotations

import copy
import html as html_lib
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from unirep.explanation_metrics import curve_summary, deletion_insertion
from unirep.inspect.occlusion import (
    ClassProbabilities,
    decisions_on_test_images,
    mean_of_known,
    object_region,
    overlay_rows,
    region_shares,
    shared_occlusion,
)
from unirep.inspect.sections import Section, SectionResult, register_section

IG_STEPS = 32
CHANGED_BELOW = 0.5  # mean Spearman of |map| under full randomisation below this: "the maps changed"


def integrated_gradients(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *, n_steps: int = IG_STEPS,
                         baseline: float = 0.0, internal_batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) captum Integrated Gradients of `model`'s output for `targets` (summed over channels) and the
    completeness gap per image (sum of attributions minus f(x) - f(baseline))."""
    from captum.attr import IntegratedGradients

    maps, delta = IntegratedGradients(model).attribute(images, baselines=baseline, target=targets, n_steps=n_steps,
                                                       internal_batch_size=internal_batch_size,
                                                       return_convergence_delta=True)
    return maps.sum(dim=1).detach(), delta.detach()


def grad_cam(classifier: nn.Module, layer: nn.Module, images: torch.Tensor, targets: torch.Tensor,
             batch_size: int = 64) -> tuple[torch.Tensor, tuple[int, int]]:
    """(N, H, W) captum LayerGradCam of `classifier`'s logits at `layer` (a (B, C, h, w) output), ReLU'd and
    upsampled bilinearly to the image; and the layer's map size (h, w)."""
    from captum.attr import LayerAttribution, LayerGradCam

    cam = LayerGradCam(classifier, layer)
    parts = [cam.attribute(images[i:i + batch_size], target=targets[i:i + batch_size], relu_attributions=True)
             for i in range(0, len(images), batch_size)]
    coarse = torch.cat(parts).detach()
    maps = LayerAttribution.interpolate(coarse, tuple(images.shape[-2:]), interpolate_mode="bilinear")
    return maps[:, 0], tuple(coarse.shape[-2:])


class TokenMap(nn.Module):
    """Passes a ViT block's (B, prefix + h*w, C) tokens on unchanged, routing the patch tokens through `self.map`
    as a (B, C, h, w) map: an Identity captum's LayerGradCam can hook like a CNN stage."""

    def __init__(self, layer_info):
        super().__init__()
        self.layer_info = layer_info
        self.map = nn.Identity()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        grid = self.map(self.layer_info.as_map(tokens))
        prefix = tokens[:, :self.layer_info.prefix_tokens]
        return torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1)


def with_token_map(classifier: nn.Module, path: str, layer_info) -> tuple[nn.Module, nn.Module]:
    """A deep copy of `classifier` whose token layer at `path` is followed by a `TokenMap`, and that map module."""
    tapped = copy.deepcopy(classifier)
    parent_path, _, child = path.rpartition(".")
    parent = tapped.get_submodule(parent_path) if parent_path else tapped
    wrapped = nn.Sequential(getattr(parent, child), TokenMap(layer_info))
    setattr(parent, child, wrapped)  # a child named "3" of a Sequential / ModuleList is replaced in place, too
    return tapped.eval(), wrapped[1].map


def map_size(model: nn.Module, layer: nn.Module, images: torch.Tensor) -> tuple[int, int] | None:
    """(h, w) of `layer`'s output on these images when it is a (B, C, h, w) map with h * w > 1 (Grad-CAM needs
    one), else None."""
    shapes = []
    handle = layer.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
    try:
        with torch.no_grad():
            model(images[:1])
    finally:
        handle.remove()
    if shapes and len(shapes[0]) == 4 and shapes[0][-1] * shapes[0][-2] > 1:
        return shapes[0][-2], shapes[0][-1]
    return None


def randomisation_verdict(check: dict, below: float = CHANGED_BELOW) -> dict:
    """Per method, from the last (fully randomised) step: did the maps change? Both rank correlations must fall
    below `below`; a map that changes in sign only keeps the image's structure in |map| (IG's x-times-gradient form,
    as Adebayo et al. observed) and is said to pass in part."""
    out = {}
    for name, values in check["steps"][-1]["methods"].items():
        absolute, signed = values["mean_spearman_abs"], values["mean_spearman"]
        changed_abs = absolute is not None and absolute < below
        changed_signed = signed is not None and signed < below
        result = ("the maps change (passes)" if changed_abs and changed_signed else
                  "only the signs change; |map| keeps the image's structure (passes in part)" if changed_signed else
                  "the maps barely change (fails)")
        out[name] = {"spearman_abs": absolute, "spearman": signed, "changed_abs": changed_abs,
                     "changed_signed": changed_signed, "threshold": below, "result": result}
    return out


# ---- the model-randomisation check ------------------------------------------------------------------------------
def parametrised_modules(model: nn.Module) -> list[str]:
    """Names of the modules that hold parameters of their own, in registration (≈ forward) order."""
    return [name for name, module in model.named_modules() if any(True for _ in module.parameters(recurse=False))]


def cascade_steps(model: nn.Module, layer_paths: dict[str, str]) -> list[tuple[str, list[str]]]:
    """Cascading randomisation from the top: (what is randomised, module names) per step. `layer_paths` maps a
    selected layer's name to its module path inside `model`, bottom to top; "<layer> and above" randomises every
    parametrised module from that layer's first submodule on (registration order), "above <top layer>" only those
    after the top layer (the probe head, a final conv, ...), "all layers" everything."""
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    owned = parametrised_modules(model)

    def span(path: str) -> tuple[int, int]:
        inside = [i for name, i in order.items() if name == path or name.startswith(path + ".")]
        return min(inside), max(inside)

    steps: list[tuple[str, list[str]]] = []
    if layer_paths:
        top_end = max(span(p)[1] for p in layer_paths.values())
        steps.append((f"above {list(layer_paths)[-1]}", [n for n in owned if order[n] > top_end]))
    for name, path in reversed(list(layer_paths.items())):
        start = span(path)[0]
        steps.append((f"{name} and above", [n for n in owned if order[n] >= start]))
    kept, seen = [], {tuple(owned)}  # a step that randomises everything is the last one, named "all layers"
    for label, names in steps:
        if names and tuple(names) not in seen:
            seen.add(tuple(names))
            kept.append((label, names))
    return [*kept, ("all layers", owned)]


def randomised_copy(model: nn.Module, module_names: list[str], seed: int = 0) -> tuple[nn.Module, dict]:
    """A deep copy of `model` with the named modules re-initialised (their own `reset_parameters`, seeded; a module
    without one gets its parameters redrawn from N(0, std of each) instead); and how many of each kind."""
    randomised = copy.deepcopy(model)
    counts = {"reset_parameters": 0, "redrawn": 0}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in module_names:
            module = randomised.get_submodule(name)
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
                counts["reset_parameters"] += 1
            else:
                with torch.no_grad():
                    for parameter in module.parameters(recurse=False):
                        parameter.normal_(0.0, float(parameter.std()) if parameter.numel() > 1 else 0.02)
                counts["redrawn"] += 1
    return randomised.eval(), counts


def rank_correlations(a: torch.Tensor, b: torch.Tensor) -> dict[str, list]:
    """Per image: Spearman of |a| vs |b|, signed Spearman, and SSIM of the max-|.|-scaled |maps| (None: constant)."""
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    out: dict[str, list] = {"spearman_abs": [], "spearman": [], "ssim": []}
    for x, y in zip(a.double().cpu().numpy(), b.double().cpu().numpy()):
        for key, (u, v) in (("spearman_abs", (np.abs(x), np.abs(y))), ("spearman", (x, y))):
            value = spearmanr(u.ravel(), v.ravel()).statistic if u.std() > 0 and v.std() > 0 else np.nan
            out[key].append(None if np.isnan(value) else float(value))
        u, v = np.abs(x), np.abs(y)
        if u.max() > 0 and v.max() > 0 and min(u.shape) >= 7:
            out["ssim"].append(float(structural_similarity(u / u.max(), v / v.max(), data_range=1.0)))
        else:
            out["ssim"].append(None)
    return out


def randomisation_check(classifier: nn.Module, methods: dict[str, Callable[[nn.Module], torch.Tensor]],
                        steps: list[tuple[str, list[str]]], seed: int = 0) -> dict:
    """Each method's maps (a function of a classifier) for `classifier` and for its randomised copies, step by
    step, compared per image; `steps` from `cascade_steps` (an empty module list: an unchanged copy)."""
    reference = {name: method(classifier) for name, method in methods.items()}
    results = []
    for label, names in steps:
        randomised, counts = randomised_copy(classifier, names, seed)
        per_method = {}
        for name, method in methods.items():
            values = rank_correlations(reference[name], method(randomised))
            per_method[name] = {**values, **{f"mean_{k}": mean_of_known(v) for k, v in values.items()}}
        results.append({"randomised": label, "modules": len(names), **counts, "methods": per_method})
    return {"order": "cascading from the top", "seed": seed, "steps": results}


ATTRIBUTION_DEFAULTS = {"ig_steps": IG_STEPS, "ig_baseline": 0.0, "randomisation_images": 8, "internal_batch_size": 64}


def last_map_layer(ctx, images: torch.Tensor) -> tuple[str, str, tuple[int, int], object] | None:
    """(name, path inside ctx.classifier, map size, the LayerInfo of a token layer or None) of the last selected
    layer with a spatial map: a (B, C, h, w) output, or ViT tokens on a patch grid (`ctx.layer_info`)."""
    paths = {id(module): path for path, module in ctx.classifier.named_modules()}
    for name in reversed(list(ctx.layers)):
        module = ctx.layers[name]
        if id(module) not in paths:
            continue
        size = map_size(ctx.classifier, module, images)
        if size is not None:
            return name, paths[id(module)], size, None
        info = getattr(ctx, "layer_info", {}).get(name)
        if info is not None and info.grid is not None and info.grid[0] * info.grid[1] > 1:
            return name, paths[id(module)], tuple(info.grid), info
    return None


def selected_layer_paths(ctx) -> dict[str, str]:
    """The selected layers' module paths inside ctx.classifier, bottom to top (the cascade's cut points)."""
    paths = {id(module): path for path, module in ctx.classifier.named_modules()}
    return {name: paths[id(module)] for name, module in ctx.layers.items() if id(module) in paths}


def attribution_methods(images: torch.Tensor, targets: torch.Tensor, settings: dict,
                        cam: tuple | None) -> dict[str, Callable[[nn.Module], torch.Tensor]]:
    """Each method as a function of a classifier (the trained one or a randomised copy) -> (N, H, W) maps."""
    def ig(classifier: nn.Module) -> torch.Tensor:
        return integrated_gradients(ClassProbabilities(classifier).eval(), images, targets,
                                    n_steps=settings["ig_steps"], baseline=settings["ig_baseline"],
                                    internal_batch_size=settings["internal_batch_size"])[0].cpu()

    methods = {"integrated-gradients": ig}
    def cam_maps(classifier: nn.Module) -> torch.Tensor:
        _, path, _, token_info = cam
        if token_info is None:
            return grad_cam(classifier, classifier.get_submodule(path), images, targets)[0].cpu()
        tapped, layer = with_token_map(classifier, path, token_info)
        return grad_cam(tapped, layer, images, targets)[0].cpu()

    if cam is not None:
        methods["grad-cam"] = cam_maps
    return methods


@register_section("attributions", title="Attributions and their sanity check", needs_spatial=False)
class AttributionsSection(Section):
    """Integrated Gradients and Grad-CAM beside occlusion, and the model-randomisation check."""

    defaults = ATTRIBUTION_DEFAULTS

    def run(self, ctx) -> SectionResult:
        from unirep.inspect.figures import image_grid, img_tag, plotly_div, png_data_uri

        settings = ctx.section_settings(self.name, ATTRIBUTION_DEFAULTS)
        occlusion, occlusion_settings = shared_occlusion(ctx)
        images, _, ids, targets, model = decisions_on_test_images(ctx, occlusion_settings["n_images"])
        cam = last_map_layer(ctx, images)
        methods = attribution_methods(images, targets, settings, cam)
        maps = {"occlusion": occlusion, **{name: method(ctx.classifier) for name, method in methods.items()}}
        with torch.no_grad():  # IG's completeness: its sum should equal f(x) - f(baseline)
            rise = (model(images) - model(torch.full_like(images, settings["ig_baseline"]))).gather(1, targets[:, None])
        gap = (maps["integrated-gradients"].sum(dim=(1, 2)) - rise[:, 0].cpu()).abs()
        masks, region = object_region(ctx, ids, ctx.input_size, occlusion_settings["prior_area"])
        per_method = {}
        for name, values in maps.items():
            curves = curve_summary(deletion_insertion(model, images, targets, values,
                                                      steps=occlusion_settings["curve_steps"]))
            shares = region_shares(values, masks.cpu())
            per_method[name] = {"mean_inside_share": mean_of_known(shares["inside_share"]),
                                "inside_share": shares["inside_share"],
                                "deletion_auc": curves["deletion"]["mean_auc"],
                                "insertion_auc": curves["insertion"]["mean_auc"]}
        names = list(maps)
        agreement = {f"{a} vs {b}": mean_of_known(rank_correlations(maps[a], maps[b])["spearman_abs"])
                     for i, a in enumerate(names) for b in names[i + 1:]}
        k = min(settings["randomisation_images"], len(ids))
        check_methods = attribution_methods(images[:k], targets[:k], settings, cam)
        check = randomisation_check(ctx.classifier, check_methods, cascade_steps(ctx.classifier,
                                                                                 selected_layer_paths(ctx)), ctx.seed)
        verdict = randomisation_verdict(check)
        numbers = {
            "settings": {**settings, "n_images": len(ids), "target": "predicted class",
                         "integrated_gradients": {"explains": "softmax probability", "n_steps": settings["ig_steps"],
                                                  "baseline": settings["ig_baseline"], "method": "gausslegendre",
                                                  "summed_over": "colour channels",
                                                  "completeness_gap_mean": float(gap.mean()),
                                                  "completeness_gap_max": float(gap.max())},
                         "grad_cam": None if cam is None else {"layer": cam[0], "map_size": list(cam[2]),
                                                               "tokens_as_map": cam[3] is not None,
                                                               "explains": "logit", "relu": True,
                                                               "upsampling": "bilinear"},
                         "region": region, "randomisation_images": k, "changed_below": CHANGED_BELOW},
            "methods": per_method,
            "agreement_spearman_abs": agreement,
            "randomisation": check,
            "randomisation_verdict": verdict,
        }
        shown = min(8, len(ids))
        tiles = overlay_rows(images[:shown], {name: values[:shown] for name, values in maps.items()})
        statement = "; ".join(f"{name}: {v['result']} (Spearman with every layer randomised: |map| "
                              f"{_fmt(v['spearman_abs'])}, signed {_fmt(v['spearman'])})"
                              for name, v in verdict.items())
        body = (f"<p>Rows: the test images, then {', '.join(names)} (red: raises the predicted class). "
                f"Region: {html_lib.escape(region)}. Sanity check (Adebayo et al. 2018, cascading randomisation "
                f"from the top, {k} images): {html_lib.escape(statement)}.</p>"
                + img_tag(png_data_uri(image_grid(tiles, ncols=shown), scale=2),
                          alt="test images and their occlusion, integrated-gradients and grad-cam maps")
                + _methods_table(per_method, agreement)
                + plotly_div(randomisation_figure(check)))
        return SectionResult(self.name, self.title, numbers, body, attribution_notes(cam, gap))

    def differences(self, a: SectionResult, b: SectionResult) -> SectionResult | None:
        numbers = attribution_differences(a.numbers, b.numbers)
        rows = "".join(f"<tr><td>{html_lib.escape(name)}</td>" + "".join(
            f"<td>{'n/a' if v is None else format(v, '+.3f')}</td>" for v in values.values()) + "<td>"
            + html_lib.escape(numbers["randomisation_verdict"]["a"].get(name, "n/a")) + "</td><td>"
            + html_lib.escape(numbers["randomisation_verdict"]["b"].get(name, "n/a")) + "</td></tr>"
            for name, values in numbers["methods"].items())
        body = ("<table><thead><tr><th>method</th><th>Δ inside share</th><th>Δ deletion AUC</th>"
                "<th>Δ insertion AUC</th><th>randomisation check A</th><th>randomisation check B</th></tr></thead>"
                "<tbody>" + rows + "</tbody></table>")
        return SectionResult(self.name, self.title, numbers, body)


def attribution_notes(cam: tuple | None, gap: torch.Tensor) -> list[str]:
    """What to keep in mind reading the maps: no Grad-CAM, a coarse Grad-CAM, an unresolved IG path integral."""
    notes = []
    if cam is None:
        notes.append("No selected layer gives a spatial map (B, C, h, w): Grad-CAM is not computed.")
    elif cam[2][0] * cam[2][1] <= 16:
        notes.append(f"Grad-CAM's layer {cam[0]} is {cam[2][0]} x {cam[2][1]} here: its upsampled map is a smooth "
                     "ramp, and on a centred region its inside share is close to the region's area by symmetry.")
    if len(gap) and float(gap.mean()) > 0.05:
        notes.append(f"Integrated Gradients do not add up: |sum - (p(x) - p(baseline))| is {float(gap.mean()):.2f} "
                     f"on average (max {float(gap.max()):.2f}): the gradients along the straight path are too rough "
                     "for this n_steps (attributions.ig_steps); read the IG maps as approximate.")
    return notes


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _methods_table(per_method: dict, agreement: dict) -> str:
    cell = _fmt

    rows = "".join(f"<tr><td>{html_lib.escape(name)}</td><td>{cell(v['mean_inside_share'])}</td>"
                   f"<td>{cell(v['deletion_auc'])}</td><td>{cell(v['insertion_auc'])}</td></tr>"
                   for name, v in per_method.items())
    pairs = "".join(f"<li>{html_lib.escape(pair)}: {cell(value)}</li>" for pair, value in agreement.items())
    return ("<table><thead><tr><th>method</th><th>inside share</th><th>deletion AUC</th><th>insertion AUC</th>"
            "</tr></thead><tbody>" + rows + "</tbody></table><p>Rank agreement between methods (Spearman of "
            "|map|, mean over images):</p><ul>" + pairs + "</ul>")


def randomisation_figure(check: dict):
    """Spearman (|map|) and SSIM against the trained model's maps, per cascade step and method."""
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=2, subplot_titles=("Spearman of |map|", "SSIM"))
    import plotly.colors

    palette = plotly.colors.qualitative.Plotly
    steps = [step["randomised"] for step in check["steps"]]
    for index, name in enumerate(check["steps"][0]["methods"]):
        colour = palette[index % len(palette)]
        for col, key in enumerate(("mean_spearman_abs", "mean_ssim"), start=1):
            figure.add_scatter(x=steps, y=[s["methods"][name][key] for s in check["steps"]], mode="lines+markers",
                               name=name, legendgroup=name, showlegend=col == 1, row=1, col=col,
                               line={"color": colour}, marker={"color": colour})
    figure.update_yaxes(range=[-1.05, 1.05])
    figure.update_layout(title="Model randomisation (cascading from the top)", height=380, margin={"t": 70})
    return figure


def attribution_differences(a: dict, b: dict) -> dict:
    """B - A of each method's inside share and deletion/insertion AUC, and both randomisation verdicts."""
    delta = {}
    for name in a["methods"]:
        if name in b["methods"]:
            delta[name] = {k: None if a["methods"][name][k] is None or b["methods"][name][k] is None
                           else b["methods"][name][k] - a["methods"][name][k]
                           for k in ("mean_inside_share", "deletion_auc", "insertion_auc")}
    verdicts = {"a": {k: v["result"] for k, v in a["randomisation_verdict"].items()},
                "b": {k: v["result"] for k, v in b["randomisation_verdict"].items()}}
    return {"of": "B - A", "methods": delta, "randomisation_verdict": verdicts}
