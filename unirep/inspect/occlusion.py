"""Context vs structure: does the decision rest on the object or on its surroundings?

captum's `Occlusion` slides a baseline-filled window over the [0, 1] pixels and records how much the probability
of the predicted class drops (the windows batched `perturbations_per_eval` at a time, never one forward per
window); each pixel gets the mean drop of the windows that cover it. Per image the report gives:
- the share of the positive attribution inside the object region: the task's object masks where it has them,
  else a centred-object prior (a centred disc covering a recorded fraction of the image), next to the region's
  share of the image area (what an attribution spread evenly would give);
- deletion and insertion curves (Petsiuk et al. 2018, RISE): pixels removed (set to the baseline, 0) from, or
  inserted (into a blurred copy) into, the image in order of attribution, the class probability against the
  fraction of pixels, and the area under each curve; the same curves in a random pixel order are the reference
  (a useful map deletes faster and inserts faster than random).
The region functions take any attribution map; `unirep.inspect.attributions` reuses them. The deletion/insertion
curves live in `unirep.explanation_metrics` (shared with `unirep explain`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from unirep.explanation_metrics import CURVE_STEPS, curve_summary, deletion_insertion
from unirep.inspect.sections import Section, SectionResult, register_section

PRIOR_AREA = 0.5
DISPLAY_IMAGES = 8


class ClassProbabilities(nn.Module):
    """A classifier's softmax: occlusion, deletion/insertion and IG explain the probability of the decision."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.classifier(pixels).softmax(dim=1)


def predicted_classes(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(images[i:i + batch_size]).argmax(dim=1) for i in range(0, len(images), batch_size)])


def occlusion_maps(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *, window: int, stride: int,
                   baseline: float = 0.0, perturbations_per_eval: int = 64) -> torch.Tensor:
    """(N, H, W) captum Occlusion maps of `model`'s output for `targets`: a (3, window, window) patch of `baseline`
    moved with `stride`; a pixel's value is the mean output drop of the windows covering it (0 where none do)."""
    from captum.attr import Occlusion

    maps = Occlusion(model).attribute(images, sliding_window_shapes=(images.shape[1], window, window),
                                      strides=(images.shape[1], stride, stride), baselines=baseline,
                                      target=targets, perturbations_per_eval=perturbations_per_eval)
    # Every channel of a pixel carries the same value (the window spans the channels): keep one.
    return maps.mean(dim=1).detach()


def occlusion_windows(size: int, window: int, stride: int) -> int:
    """How many windows captum places along one side (the last one may leave a border uncovered)."""
    return (size - window) // stride + 1


def centred_prior(size: int, area: float = PRIOR_AREA) -> torch.Tensor:
    """(size, size) bool disc around the image centre covering `area` of the image (the centred-object prior)."""
    radius = math.sqrt(area * size * size / math.pi)
    centre = (size - 1) / 2
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (rows - centre) ** 2 + (cols - centre) ** 2 <= radius ** 2


def region_shares(maps: torch.Tensor, masks: torch.Tensor) -> dict:
    """Per image: share of the positive attribution inside `masks` (None where a map has none) and the masks'
    share of the image area."""
    positive = maps.clamp(min=0).double().flatten(1)
    masks = masks.expand(maps.shape).flatten(1)
    total = positive.sum(dim=1)
    inside = (positive * masks).sum(dim=1)
    shares = [float(i / t) if t > 0 else None for i, t in zip(inside, total)]
    return {"inside_share": shares, "outside_share": [None if s is None else 1 - s for s in shares],
            "region_area_share": [float(a) for a in masks.double().mean(dim=1)]}


def object_region(ctx, ids: list[str], size: int, area: float) -> tuple[torch.Tensor, str]:
    """The task's object masks where it knows them, else the centred-object prior; and which one it is."""
    masks = ctx.object_masks(ids)
    if masks is not None:
        return masks.bool(), "task object masks"
    return centred_prior(size, area)[None].expand(len(ids), -1, -1), f"centred-disc prior covering {area:.0%}"


def mean_of_known(values: list) -> float | None:
    """Mean of the values that are not None (a per-image number can be undefined); None if none is."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


OCCLUSION_DEFAULTS = {"n_images": 16, "window": None, "stride": None, "baseline": 0.0, "perturbations_per_eval": 64,
                      "curve_steps": CURVE_STEPS, "prior_area": PRIOR_AREA}


def occlusion_settings(ctx) -> dict:
    """The occlusion settings of `ctx` (user overrides on the defaults); window 1/8 of the side, stride half of it."""
    settings = ctx.section_settings("occlusion", OCCLUSION_DEFAULTS)
    window = int(settings["window"] or max(2, ctx.input_size // 8))
    stride = int(settings["stride"] or max(1, window // 2))
    if not 1 <= window <= ctx.input_size or stride < 1:
        from unirep.errors import ConfigError

        raise ConfigError(f"occlusion.window={window}, occlusion.stride={stride}: need 1 <= window <= "
                          f"{ctx.input_size} (the input size) and stride >= 1")
    return {**settings, "n_images": min(int(settings["n_images"]), ctx.n_images), "window": window, "stride": stride}


def decisions_on_test_images(ctx, n: int) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor, nn.Module]:
    """The first n test images, labels, ids, the classifier's predicted classes and its probability model."""
    images, labels, ids = ctx.pixels("test", n)
    images, labels = images.to(ctx.device), labels.to(ctx.device)
    model = ClassProbabilities(ctx.classifier).eval()
    return images, labels, ids, predicted_classes(ctx.classifier, images), model


def shared_occlusion(ctx) -> tuple[torch.Tensor, dict]:
    """Occlusion maps of the test decisions, computed once per context (the attributions section shows them too)."""
    settings = occlusion_settings(ctx)
    cache = vars(ctx).setdefault("_shared_occlusion", {})
    key = tuple(sorted((k, v) for k, v in settings.items()))
    if key not in cache:
        images, _, _, targets, model = decisions_on_test_images(ctx, settings["n_images"])
        cache[key] = occlusion_maps(model, images, targets, window=settings["window"], stride=settings["stride"],
                                    baseline=settings["baseline"],
                                    perturbations_per_eval=settings["perturbations_per_eval"]).cpu()
    return cache[key], settings


def overlay_rows(images: torch.Tensor, maps_by_row: dict[str, torch.Tensor], symmetric: bool = True) -> torch.Tensor:
    """(rows * N, 3, H, W) tiles: the images, then each map overlaid on them, row by row."""
    from torchvision.transforms.v2.functional import pil_to_tensor

    from unirep.inspect.figures import heatmap_overlay

    tiles = [images.cpu()]
    for maps in maps_by_row.values():
        tiles.append(torch.stack([pil_to_tensor(heatmap_overlay(image, m, symmetric=symmetric, cmap="RdBu_r"))
                                  .float() / 255.0 for image, m in zip(images.cpu(), maps)]))
    return torch.cat(tiles)


def curves_figure(summaries: dict[str, dict], fractions: list[float], title: str):
    """Plotly deletion and insertion curves (mean over images), one line per attribution order."""
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=2, subplot_titles=("deletion (lower is better)",
                                                           "insertion (higher is better)"))
    import plotly.colors

    palette = plotly.colors.qualitative.Plotly
    for index, (name, summary) in enumerate(summaries.items()):
        for col, kind in enumerate(("deletion", "insertion"), start=1):
            figure.add_scatter(x=fractions, y=summary[kind]["mean_curve"], mode="lines", row=1, col=col,
                               name=f"{name}, {kind} AUC {summary[kind]['mean_auc']:.3f}", legendgroup=name,
                               line={"color": palette[index % len(palette)], "dash": "dot" if col == 2 else "solid"})
    figure.update_xaxes(title_text="fraction of pixels")
    figure.update_yaxes(title_text="probability of the predicted class", range=[0, 1])
    figure.update_layout(title=title, height=380, margin={"t": 70})
    return figure


@register_section("occlusion", title="Context vs structure: occlusion", needs_spatial=False)
class OcclusionSection(Section):
    """captum Occlusion of the probe's decision on test images, the share of it on the object, deletion/insertion."""

    defaults = OCCLUSION_DEFAULTS

    def run(self, ctx) -> SectionResult:
        import html as html_lib

        from unirep.inspect.figures import image_grid, img_tag, plotly_div, png_data_uri

        maps, settings = shared_occlusion(ctx)
        images, labels, ids, targets, model = decisions_on_test_images(ctx, settings["n_images"])
        with torch.no_grad():
            confidence = model(images).gather(1, targets[:, None])[:, 0].cpu()
        masks, region = object_region(ctx, ids, ctx.input_size, settings["prior_area"])
        shares = region_shares(maps, masks.cpu())
        curves = deletion_insertion(model, images, targets, maps, steps=settings["curve_steps"],
                                    baseline=settings["baseline"])
        random_curves = deletion_insertion(model, images, targets, maps, steps=settings["curve_steps"],
                                           baseline=settings["baseline"], order="random", seed=ctx.seed)
        summary = {"occlusion": curve_summary(curves), "random order": curve_summary(random_curves)}
        windows = occlusion_windows(ctx.input_size, settings["window"], settings["stride"])
        numbers = {
            "settings": {**settings, "windows_per_image": windows * windows, "target": "predicted class",
                         "explains": "softmax probability of the target", "region": region,
                         "deletion_baseline": settings["baseline"],
                         "insertion_start": "Gaussian blur, sigma 5 px at 224 px scaled to the input",
                         "auc": "trapezoid over fractions 0..1", "random_order_seed": ctx.seed},
            "region": region,
            "mean_inside_share": mean_of_known(shares["inside_share"]),
            "mean_region_area_share": mean_of_known(shares["region_area_share"]),
            "deletion_auc": summary["occlusion"]["deletion"]["mean_auc"],
            "insertion_auc": summary["occlusion"]["insertion"]["mean_auc"],
            "random_order": {k: v["mean_auc"] for k, v in summary["random order"].items()},
            "curves": {"fractions": curves["fractions"],
                       **{name: {k: v["mean_curve"] for k, v in s.items()} for name, s in summary.items()}},
            "per_image": [{"id": ids[i], "label": int(labels[i]), "predicted": int(targets[i]),
                           "probability": float(confidence[i]), "inside_share": shares["inside_share"][i],
                           "region_area_share": shares["region_area_share"][i],
                           "deletion_auc": curves["deletion"]["auc"][i],
                           "insertion_auc": curves["insertion"]["auc"][i],
                           "deletion_curve": curves["deletion"]["probability"][i],
                           "insertion_curve": curves["insertion"]["probability"][i]} for i in range(len(ids))],
        }
        shown = min(DISPLAY_IMAGES, len(ids))
        tiles = overlay_rows(images[:shown], {"occlusion": maps[:shown]})
        inside = numbers["mean_inside_share"]
        lead = (f"<p>Occlusion window {settings['window']} px, stride {settings['stride']} px, baseline "
                f"{settings['baseline']} ({windows * windows} windows per image, {settings['perturbations_per_eval']}"
                f" per forward pass) on {len(ids)} test images; the maps explain the probability of the predicted "
                f"class (red: occluding it lowers the probability). Object region: {html_lib.escape(region)}. "
                f"Mean share of the positive attribution inside it: "
                f"{'n/a' if inside is None else f'{inside:.3f}'} (the region is "
                f"{numbers['mean_region_area_share']:.3f} of the image).</p>")
        rows = "".join(f"<tr><td>{html_lib.escape(r['id'])}</td><td>{html_lib.escape(ctx.class_names[r['label']])}"
                       f"</td><td>{html_lib.escape(ctx.class_names[r['predicted']])}</td><td>{r['probability']:.3f}"
                       f"</td><td>{'n/a' if r['inside_share'] is None else format(r['inside_share'], '.3f')}</td>"
                       f"<td>{r['deletion_auc']:.3f}</td><td>{r['insertion_auc']:.3f}</td></tr>"
                       for r in numbers["per_image"])
        body = (lead + img_tag(png_data_uri(image_grid(tiles, ncols=shown), scale=2),
                               alt="test images (top) and their occlusion maps (bottom)")
                + plotly_div(curves_figure(summary, curves["fractions"], "Deletion and insertion (RISE)"))
                + "<table><thead><tr><th>image</th><th>label</th><th>predicted</th><th>p</th><th>inside share</th>"
                  "<th>deletion AUC</th><th>insertion AUC</th></tr></thead><tbody>" + rows + "</tbody></table>")
        notes = [] if region == "task object masks" else [
            f"The task has no object boxes: the inside share uses a {region} (an assumption, not the task's truth)."]
        return SectionResult(self.name, self.title, numbers, body, notes)

    def differences(self, a: SectionResult, b: SectionResult) -> SectionResult | None:
        keys = ("mean_inside_share", "deletion_auc", "insertion_auc")
        delta = {k: None if a.numbers[k] is None or b.numbers[k] is None else b.numbers[k] - a.numbers[k]
                 for k in keys}
        rows = "".join(f"<tr><td>{k}</td><td>{_fmt(a.numbers[k])}</td><td>{_fmt(b.numbers[k])}</td>"
                       f"<td>{_fmt(delta[k], signed=True)}</td></tr>" for k in keys)
        body = ("<table><thead><tr><th>number</th><th>A</th><th>B</th><th>B − A</th></tr></thead><tbody>"
                + rows + "</tbody></table>")
        return SectionResult(self.name, self.title, {"b_minus_a": delta}, body)


def _fmt(value: float | None, signed: bool = False) -> str:
    return "n/a" if value is None else format(value, "+.3f" if signed else ".3f")
