"""Noisy filters: the `filters` section of `unirep inspect`.

Every conv layer with a spatial kernel gets a noise score per filter (unirep.unit_stats.filter_noise_scores: the
share of the filter's spatial energy above half the Nyquist frequency, from its zero-padded 2-D DFT; white noise
~0.8, smooth filters near 0); 1 x 1 convolutions have no spatial kernel and no score, and the section says how many
it left out. Each layer's median is placed between two references of the same architecture
(`ctx.reference_backbones()`): random init (position 0, the untrained state) and the packaged ImageNet weights
(position 1, trained), so `position = (median - random median) / (trained median - random median)`: near 0 the
layer looks untrained, near 1 as smooth as the trained reference, above 1 smoother. Layers are paired with a
reference's by order among the spatial convs, when their weight shapes agree. The first layer's filters are shown
as image tiles next to the references'.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import torch
from torch import nn

from unirep.inspect.figures import image_grid, img_tag, plotly_div, png_data_uri
from unirep.inspect.sections import Section, SectionResult, register_section
from unirep.unit_stats import NOISE_CUTOFF, NOISE_PAD, filter_noise_scores, reference_position, spatial_convs

DEFAULTS: dict[str, Any] = {"max_tiles": 64, "tile_columns": 16}
CHANGE_THRESHOLD = 0.05  # |B - A| of a median noise score at or above this is highlighted
REFERENCE_ORDER = ("random-init", "trained")


def layer_scores(model: nn.Module) -> tuple[list[dict[str, Any]], list[str]]:
    """Per spatial conv layer (module order): name, kernel, filter count, weight shape and every filter's score;
    and the names of the 1 x 1 convs (no score)."""
    spatial, pointwise = spatial_convs(model)
    rows = []
    for name, conv in spatial:
        scores = filter_noise_scores(conv.weight)
        rows.append({"name": name, "kernel": list(conv.kernel_size), "filters": int(conv.out_channels),
                     "groups": int(conv.groups), "weight_shape": list(conv.weight.shape),
                     "median": float(np.median(scores)), "p10": float(np.percentile(scores, 10)),
                     "p90": float(np.percentile(scores, 90)), "scores": [round(float(s), 5) for s in scores]})
    return rows, pointwise


def place_between_references(rows: list[dict[str, Any]], references: dict[str, list[dict[str, Any]]]) -> None:
    """Add each layer's reference medians and its position (0 = random-init, 1 = trained) in place."""
    for i, row in enumerate(rows):
        row["references"] = {}
        for label, ref_rows in references.items():
            if i < len(ref_rows) and ref_rows[i]["weight_shape"] == row["weight_shape"]:
                row["references"][label] = ref_rows[i]["median"]
        refs = row["references"]
        row["position"] = (reference_position(row["median"], refs["random-init"], refs["trained"])
                           if {"random-init", "trained"} <= set(refs) else None)


def filter_tiles(conv_weight: torch.Tensor, max_tiles: int, columns: int) -> Any:
    """First-layer filters as images: RGB when the layer reads 3 channels (else the channel mean, grey), each
    filter scaled around 0 by its largest |weight| (0 -> mid-grey)."""
    w = conv_weight.detach().float().cpu()[:max_tiles]
    w = w if w.shape[1] == 3 else w.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    bound = w.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    return image_grid(0.5 + 0.5 * w / bound, ncols=columns, pad=1)


def measure(ctx, settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, nn.Module]]:
    rows, pointwise = layer_scores(ctx.backbone)
    references = ctx.reference_backbones() if rows else {}
    references = {k: references[k] for k in REFERENCE_ORDER if k in references}
    place_between_references(rows, {label: layer_scores(model)[0] for label, model in references.items()})
    positions = [r["position"] for r in rows if r["position"] is not None]
    numbers = {
        "settings": {"score": "share of the filter's energy above the cutoff in its zero-padded 2-D DFT",
                     "cutoff_cycles_per_pixel": NOISE_CUTOFF, "dft_size": NOISE_PAD,
                     "position": "(median - random-init median) / (trained median - random-init median)",
                     "references": list(references)},
        "layers": rows, "pointwise_convs": pointwise,
        "first_layer": None if not rows else {"name": rows[0]["name"], "median": rows[0]["median"],
                                              "position": rows[0]["position"],
                                              "references": rows[0]["references"]},
        "median_position": float(np.median(positions)) if positions else None,
    }
    return numbers, references


def notes_for(numbers: dict[str, Any]) -> list[str]:
    notes = []
    if not numbers["layers"]:
        notes.append("no convolution with a spatial kernel in this backbone: no noise score")
    if numbers["pointwise_convs"]:
        notes.append(f"{len(numbers['pointwise_convs'])} 1 × 1 convolutions have no spatial kernel and no noise "
                     "score (listed in the JSON)")
    refs = numbers["settings"]["references"]
    if numbers["layers"] and "trained" not in refs:
        notes.append("no packaged ImageNet weights of this architecture: no trained reference, so no position "
                     + ("(random-init reference shown)" if refs else "(and no random-init reference either)"))
    return notes


def scores_figure(rows: list[dict[str, Any]]):
    import plotly.graph_objects as go

    x = list(range(len(rows)))
    names = [r["name"] for r in rows]
    fig = go.Figure(go.Scatter(
        x=x, y=[r["median"] for r in rows], mode="lines+markers", name="this backbone (median, p10–p90)",
        text=names, error_y={"type": "data", "symmetric": False, "array": [r["p90"] - r["median"] for r in rows],
                             "arrayminus": [r["median"] - r["p10"] for r in rows]}))
    for label in REFERENCE_ORDER:
        y = [r["references"].get(label) for r in rows]
        if any(v is not None for v in y):
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"{label} (median)", text=names,
                                     line={"dash": "dot"}))
    fig.update_layout(title="Filter noise score per spatial conv layer (0 smooth, ~0.8 white noise)", height=360,
                      xaxis_title="spatial conv layer (module order; hover for its name)", yaxis_title="noise score",
                      yaxis_range=[0, 1], margin={"l": 50, "r": 10, "t": 40, "b": 40})
    return fig


def layer_table(rows: list[dict[str, Any]]) -> str:
    def fmt(v: float | None, digits: int = 3) -> str:
        return "–" if v is None else f"{v:.{digits}f}"

    body = "".join(
        f"<tr><td>{html.escape(r['name'])}</td><td>{r['kernel'][0]}×{r['kernel'][1]}</td><td>{r['filters']}</td>"
        f"<td>{fmt(r['median'])}</td><td>{fmt(r['p10'])}–{fmt(r['p90'])}</td>"
        f"<td>{fmt(r['references'].get('random-init'))}</td><td>{fmt(r['references'].get('trained'))}</td>"
        f"<td>{fmt(r['position'], 2)}</td></tr>" for r in rows)
    return ('<details><summary>per layer</summary><table class="numbers"><thead><tr><th>layer</th><th>kernel</th>'
            "<th>filters</th><th>median</th><th>p10–p90</th><th>random-init</th><th>trained</th><th>position</th>"
            f"</tr></thead><tbody>{body}</tbody></table></details>")


@register_section("filters", title="Noisy filters: first-layer tiles and a noise score per conv layer")
class Filters(Section):
    defaults = DEFAULTS

    def run(self, ctx) -> SectionResult:
        settings = ctx.section_settings(self.name, DEFAULTS)
        numbers, references = measure(ctx, settings)
        rows = numbers["layers"]
        if not rows:
            return SectionResult(self.name, self.title, numbers, "", notes_for(numbers))
        first = numbers["first_layer"]
        position = first["position"]
        summary = (f"<p>First layer <code>{html.escape(first['name'])}</code>: median noise score "
                   f"<b>{first['median']:.3f}</b>"
                   + "".join(f", {label} {value:.3f}" for label, value in first["references"].items())
                   + (f"; position {position:.2f} (0 = random init, 1 = trained)" if position is not None else "")
                   + (f". Median position over layers: {numbers['median_position']:.2f}."
                      if numbers["median_position"] is not None else ".") + "</p>")
        tiles = []
        models = {"this backbone": ctx.backbone, **references}
        for label, model in models.items():
            conv = spatial_convs(model)[0]
            conv = conv[0][1] if conv else None
            if conv is None or list(conv.weight.shape) != rows[0]["weight_shape"]:
                continue
            grid = filter_tiles(conv.weight, settings["max_tiles"], settings["tile_columns"])
            scale = max(1, 48 // max(conv.kernel_size))
            tiles.append(f'<div class="unit"><span class="unit-label">{html.escape(label)}</span>'
                         + img_tag(png_data_uri(grid, scale=scale), f"first-layer filters of {label}",
                                   css_class="tile") + "</div>")
        body = summary + "".join(tiles) + plotly_div(scores_figure(rows)) + layer_table(rows)
        return SectionResult(self.name, self.title, numbers, body, notes_for(numbers))

    def differences(self, a: SectionResult, b: SectionResult) -> SectionResult | None:
        numbers = differences(a.numbers, b.numbers)
        return SectionResult(self.name, self.title, numbers, differences_table(numbers))


def differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """B - A of each layer's median noise score and position, for layers with the same name and weight shape."""
    b_layers = {r["name"]: r for r in b["layers"]}
    layers, changed = {}, []
    for ra in a["layers"]:
        rb = b_layers.get(ra["name"])
        if rb is None or rb["weight_shape"] != ra["weight_shape"]:
            continue
        delta = rb["median"] - ra["median"]
        pa, pb = ra["position"], rb["position"]
        layers[ra["name"]] = {"median": [ra["median"], rb["median"], delta],
                              "position": [pa, pb, None if pa is None or pb is None else pb - pa]}
        if abs(delta) >= CHANGE_THRESHOLD:
            changed.append(ra["name"])
    return {"of": "B - A", "threshold": CHANGE_THRESHOLD, "layers": layers, "changed": changed,
            "first_layer": next(iter(layers.items()), None)}


def differences_table(numbers: dict[str, Any]) -> str:
    if not numbers["layers"]:
        return "<p>No conv layer of the same name and shape in both backbones: compare them side by side below.</p>"

    def fmt(v: float | None, digits: int = 3) -> str:
        return "–" if v is None else f"{v:.{digits}f}"

    rows = []
    for name, row in numbers["layers"].items():
        (ma, mb, d), (pa, pb, dp) = row["median"], row["position"]
        mark = ' class="delta"' if abs(d) >= numbers["threshold"] else ""
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{ma:.3f}</td><td>{mb:.3f}</td><td{mark}>{d:+.3f}</td>"
                    f"<td>{fmt(pa, 2)}</td><td>{fmt(pb, 2)}</td><td>{'–' if dp is None else f'{dp:+.2f}'}</td></tr>")
    changed = ", ".join(numbers["changed"]) or "none"
    return (f"<p>Layers whose median noise score moved by ≥ {numbers['threshold']:g}: {html.escape(changed)}.</p>"
            '<table class="numbers"><thead><tr><th>layer</th><th>median A</th><th>median B</th><th>B − A</th>'
            "<th>position A</th><th>position B</th><th>B − A</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table>")
