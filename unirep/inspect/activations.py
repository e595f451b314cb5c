"""Dead and dormant units: the `activations` section of `unirep inspect`.

Hooks on every activation module of the backbone (unirep.unit_stats: found by type, ReLU/ReLU6 and the smooth
ones; ViT tokens reshaped to patch maps) while it runs on many different inputs of the task (default: the report's
`--images` budget of test images; `activations.images=N`). Per stage and per activation layer: the dead-unit share
(a channel's map exactly zero on >= q % of the inputs; ReLU/ReLU6 only), the dormant ratio (Sokar et al. 2023) at
each tau, and activation histograms; plus the maps of a few inputs for the most active channels of the selected
layers. For SiLU/GELU networks only the dormant ratio applies, and the section says so.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import torch

from unirep.inspect.figures import colourise, image_grid, img_tag, plotly_div, png_data_uri
from unirep.inspect.sections import Section, SectionResult, register_section
from unirep.unit_stats import (
    DEFAULT_DEAD_QUANTILE,
    DEFAULT_DORMANT_TAUS,
    activation_layers,
    measure_unit_stats,
    summarize,
)

DEFAULTS: dict[str, Any] = {"images": None, "split": "test", "dead_quantile": DEFAULT_DEAD_QUANTILE,
                            "dormant_taus": list(DEFAULT_DORMANT_TAUS), "histogram_bins": 40, "map_images": 4,
                            "map_channels": 6, "map_layers": 2, "batch_size": 64}
CHANGE_THRESHOLD = 0.05  # |B - A| of a share at or above this (5 points) is highlighted


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def measure(ctx, settings: dict[str, Any]) -> dict[str, Any]:
    """The section's numbers: unit statistics of ctx.backbone over `images` images of `split`."""
    # Default: the report's --images budget, as for every section (a stated q % of few inputs means little).
    pixels, _, ids = ctx.pixels(settings["split"], settings["images"] or ctx.n_images)
    batches = (ctx.normalize(pixels[i:i + settings["batch_size"]].to(ctx.device))
               for i in range(0, len(pixels), settings["batch_size"]))
    stats = measure_unit_stats(ctx.backbone, batches, seed=ctx.seed)
    numbers = summarize(stats, float(settings["dead_quantile"]), [float(t) for t in settings["dormant_taus"]],
                        int(settings["histogram_bins"]))
    numbers["settings"].update({"split": settings["split"], "images": len(ids), "seed": ctx.seed})
    numbers["activation_types"] = sorted({layer.module_type for layer in activation_layers(ctx.backbone)})
    return numbers


def notes_for(numbers: dict[str, Any]) -> list[str]:
    settings = numbers["settings"]
    if not numbers["layers"]:
        return ["no activation module (ReLU, SiLU, GELU, ...) found in this backbone: nothing to measure"]
    notes = [f"measured on {settings['images']} {settings['split']} images; dead = a channel's map exactly zero on "
             f">= {100 * settings['dead_quantile']:g} % of them; dormant = mean |activation| <= tau x its layer's "
             f"mean (tau {', '.join(f'{t:g}' for t in settings['dormant_taus'])})"]
    if not numbers["dead_share_applies"]:
        notes.append(f"{'/'.join(numbers['activation_types'])} network: its activations are never exactly zero, so "
                     "the dead-unit share does not apply; only the dormant ratio is reported")
    elif "smooth" in numbers["activation_kinds"]:
        notes.append("mixed activations: the dead share counts the ReLU/ReLU6 layers only, the dormant ratio all")
    return notes


def stage_table(numbers: dict[str, Any]) -> str:
    taus = numbers["settings"]["dormant_taus"]
    head = "".join(f"<th>dormant τ={t:g}</th>" for t in taus)
    rows = "".join(
        f"<tr><td>{html.escape(stage)}</td><td>{row['channels']}</td><td>{_pct(row['dead_share'])}</td>"
        + "".join(f"<td>{_pct(row['dormant_ratio'][str(t)])}</td>" for t in taus) + "</tr>"
        for stage, row in numbers["stages"].items())
    overall = numbers["overall_dead_share"]
    return (f"<p>Dead share over all ReLU channels: <b>{_pct(overall)}</b></p>" if overall is not None else "") + (
        f'<table class="numbers"><thead><tr><th>stage</th><th>channels</th><th>dead</th>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table>")


def layer_table(numbers: dict[str, Any]) -> str:
    taus = numbers["settings"]["dormant_taus"]
    head = "".join(f"<th>dormant τ={t:g}</th>" for t in taus)
    rows = "".join(
        f"<tr><td>{html.escape(r['name'])}</td><td>{html.escape(r['module_type'])}</td><td>{r['channels']}</td>"
        f"<td>{r['map_size'][0]}×{r['map_size'][1]}</td><td>{_pct(r['dead_share'])}</td>"
        + "".join(f"<td>{_pct(r['dormant_ratio'][str(t)])}</td>" for t in taus) + "</tr>"
        for r in numbers["layers"])
    return (f"<details><summary>per activation layer ({len(numbers['layers'])})</summary>"
            f'<table class="numbers"><thead><tr><th>layer</th><th>type</th><th>channels</th><th>map</th>'
            f"<th>dead</th>{head}</tr></thead><tbody>{rows}</tbody></table></details>")


def histogram_figure(numbers: dict[str, Any]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for stage, row in numbers["stages"].items():
        hist = row["histogram"]
        if not hist["counts"]:
            continue
        edges, counts = np.asarray(hist["edges"]), np.asarray(hist["counts"], dtype=float)
        fig.add_trace(go.Scatter(x=(edges[:-1] + edges[1:]) / 2, y=counts / max(counts.sum(), 1), mode="lines",
                                 name=f"{stage} (zero {_pct(hist['zero_share'])})", line_shape="hvh"))
    fig.update_layout(title="Activation values per stage (share per bin; 0.1–99.9 % range)", height=360,
                      xaxis_title="activation", yaxis_title="share of values", yaxis_type="log",
                      margin={"l": 50, "r": 10, "t": 40, "b": 40})
    return fig


def activation_maps(ctx, settings: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Tiles of the first `map_images` inputs (rows: the image, then its maps of the layer's most active
    channels), for the first `map_layers` selected layers."""
    names = list(ctx.layer_info)[: int(settings["map_layers"])]
    if not names or not ctx.spatial:
        return "", {}
    pixels, _, ids = ctx.pixels(settings["split"], int(settings["map_images"]))
    maps = ctx.layer_maps(pixels, names)
    parts, shown = [], {}
    for name in names:
        fmap = maps[name].float().cpu()
        channels = fmap.mean(dim=(0, 2, 3)).argsort(descending=True)[: int(settings["map_channels"])].tolist()
        tiles = []
        size = pixels.shape[-1]
        for i in range(len(pixels)):
            tiles.append(pixels[i].cpu())
            for c in channels:
                up = torch.nn.functional.interpolate(fmap[i:i + 1, c:c + 1], size=(size, size), mode="nearest")[0, 0]
                tiles.append(torch.as_tensor(colourise(up)).permute(2, 0, 1).float())
        grid = image_grid(torch.stack(tiles), ncols=len(channels) + 1)
        shown[name] = {"channels": channels, "map_size": list(fmap.shape[-2:]), "images": ids}
        parts.append(f"<h4>{html.escape(name)}: channels {channels} (most active), map "
                     f"{fmap.shape[-2]}×{fmap.shape[-1]}</h4>"
                     + img_tag(png_data_uri(grid, scale=max(1, 96 // size)),
                               f"activation maps of layer {name}", css_class="figure"))
    return "<p>Each row: an input, then its activation maps (per map min–max scaled).</p>" + "".join(parts), shown


@register_section("activations", title="Dead and dormant units, activation histograms and maps")
class Activations(Section):
    defaults = DEFAULTS

    def run(self, ctx) -> SectionResult:
        settings = ctx.section_settings(self.name, DEFAULTS)
        numbers = measure(ctx, settings)
        body = stage_table(numbers) + layer_table(numbers)
        if numbers["layers"]:
            body += plotly_div(histogram_figure(numbers))
        maps_html, shown = activation_maps(ctx, settings)
        numbers["activation_maps"] = shown
        return SectionResult(self.name, self.title, numbers, body + maps_html, notes_for(numbers))

    def differences(self, a: SectionResult, b: SectionResult) -> SectionResult | None:
        numbers = differences(a.numbers, b.numbers)
        return SectionResult(self.name, self.title, numbers, differences_table(numbers))


def _delta(x: float | None, y: float | None) -> float | None:
    return None if x is None or y is None else y - x


def differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """B - A of the dead share and dormant ratios per stage both have (same names: same architecture), and
    overall; `changed` lists what moved by >= CHANGE_THRESHOLD."""
    taus = [t for t in a["settings"]["dormant_taus"] if t in b["settings"]["dormant_taus"]]
    stages, changed = {}, []
    for stage, ra in a["stages"].items():
        rb = b["stages"].get(stage)
        if rb is None:
            continue
        row = {"dead_share": [ra["dead_share"], rb["dead_share"], _delta(ra["dead_share"], rb["dead_share"])]}
        for t in taus:
            va, vb = ra["dormant_ratio"][str(t)], rb["dormant_ratio"][str(t)]
            row[f"dormant_{t:g}"] = [va, vb, vb - va]
        stages[stage] = row
        changed += [f"{stage} {key}" for key, (_, _, d) in row.items() if d is not None and abs(d) >= CHANGE_THRESHOLD]
    overall = [a["overall_dead_share"], b["overall_dead_share"],
               _delta(a["overall_dead_share"], b["overall_dead_share"])]
    return {"of": "B - A", "threshold": CHANGE_THRESHOLD, "overall_dead_share": overall, "stages": stages,
            "changed": changed, "stages_only_in_a": sorted(set(a["stages"]) - set(b["stages"])),
            "stages_only_in_b": sorted(set(b["stages"]) - set(a["stages"])),
            "settings": {"a": a["settings"], "b": b["settings"]}}


def differences_table(numbers: dict[str, Any]) -> str:
    if not numbers["stages"]:
        return ("<p>The two backbones share no stage name (different architectures): compare their tables side "
                "by side below.</p>")
    keys = list(next(iter(numbers["stages"].values())))

    def cells(values: list) -> str:
        va, vb, d = values
        mark = ' class="delta"' if d is not None and abs(d) >= numbers["threshold"] else ""
        sign = "–" if d is None else f"{100 * d:+.1f}"
        return f"<td>{_pct(va)}</td><td>{_pct(vb)}</td><td{mark}>{sign}</td>"

    head = "".join(f"<th colspan=3>{html.escape(k.replace('_', ' '))} (A, B, B−A pts)</th>" for k in keys)
    rows = "".join(f"<tr><td>{html.escape(stage)}</td>" + "".join(cells(row[k]) for k in keys) + "</tr>"
                   for stage, row in numbers["stages"].items())
    changed = ", ".join(numbers["changed"]) or "nothing"
    return (f"<p>Changed by ≥ {100 * numbers['threshold']:g} points: {html.escape(changed)}.</p>"
            f'<table class="numbers"><thead><tr><th>stage</th>{head}</tr></thead><tbody>{rows}</tbody></table>')
