"""Representation-level numbers: effective rank (RankMe), the eigenspectrum's power-law decay (alpha-ReQ), neural
collapse's within/between-class variability (NC1), and, for `unirep inspect A B`, linear CKA between the backbones.

The definitions live in `unirep.estimators.geometry` (below this package: RankMe, alpha-ReQ and NC1 are also
training-free estimators there, so they sit on the leaderboard); this section applies them to the probe features
and to each selected layer's pooled activations, and adds linear CKA between two backbones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unirep.estimators.geometry import (
    RANKME_EPS,
    SPECTRUM_RTOL,
    alpha_req,
    covariance_spectrum,
    fit_power_law,
    linear_cka,
    nc1,
    rankme,
)
from unirep.inspect.sections import Section, SectionResult, register_section


def representation_numbers(features: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """RankMe, alpha-ReQ and (with labels) NC1 of one feature matrix, with what they were computed on."""
    n, d = features.shape
    fit = alpha_req(features)
    numbers = {"rankme": rankme(features), "rankme_share": rankme(features) / max(1, min(n, d)),
               "alpha": fit["alpha"], "alpha_r2": fit["r2"], "alpha_n_fit": fit["n_fit"], "n": int(n), "d": int(d)}
    if labels is not None and len(np.unique(labels)) > 1:
        numbers["nc1"] = nc1(features, labels)
    return numbers


@dataclass
class RepresentationResult(SectionResult):
    """A SectionResult that also keeps the features CKA needs (never written to the report)."""

    arrays: dict[str, Any] = field(default_factory=dict, repr=False)


@register_section("representation", title="Representation geometry: RankMe, α-ReQ, NC1 (and CKA between backbones)")
class Representation(Section):
    """Numbers of the penultimate (probe) features, from the feature cache's train + val splits (test stays
    unread, as for the estimators), and per selected layer on pooled (spatial mean) activations of `images`
    train images (the same seeded images for every backbone, so layers can be compared by CKA)."""

    defaults = {"layer_images": "--images", "splits": "train+val"}  # layer_images: the command's --images

    def run(self, ctx) -> SectionResult:
        settings = ctx.section_settings(self.name, {**self.defaults, "layer_images": ctx.n_images})
        parts = [ctx.features(s) for s in settings["splits"].split("+")]
        features = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        overall = representation_numbers(features, labels)
        pixels, layer_labels, ids = ctx.pixels("train", int(settings["layer_images"]))
        pooled = ctx.collect_maps(pixels, reduce=lambda m: m.mean(dim=(2, 3))) if ctx.layer_info else {}
        per_layer = {name: representation_numbers(v.double().numpy(), layer_labels.numpy())
                     for name, v in pooled.items() if len(v) > 1}
        numbers = {"settings": {**settings, "rankme_eps": RANKME_EPS, "spectrum_rtol": SPECTRUM_RTOL,
                                "layer_pooling": "spatial mean of each layer's map (ViT: patch tokens)"},
                   "features": overall, "layers": per_layer, "layer_image_ids": ids}
        lam = covariance_spectrum(features)
        html = _table(overall, per_layer) + _plots(lam, overall, per_layer, ctx.label)
        notes = [f"penultimate features: {overall['n']} {settings['splits']} examples x {overall['d']} dims; layers "
                 f"on {len(ids)} train images"]
        arrays = {"features": features, "layers": {k: v.double().numpy() for k, v in pooled.items()}, "ids": ids,
                  "task": ctx.provenance.get("task", {}).get("digest"), "splits": settings["splits"]}
        return RepresentationResult(self.name, self.title, numbers, html, notes, arrays=arrays)

    def differences(self, a: SectionResult, b: SectionResult) -> SectionResult | None:
        arrays_a, arrays_b = getattr(a, "arrays", {}), getattr(b, "arrays", {})
        numbers: dict[str, Any] = {"delta": {k: b.numbers["features"][k] - a.numbers["features"][k]
                                             for k in ("rankme", "alpha", "nc1") if k in a.numbers["features"]
                                             and k in b.numbers["features"]}}
        notes = []
        same_examples = (arrays_a.get("task") == arrays_b.get("task")
                         and arrays_a.get("splits") == arrays_b.get("splits")
                         and len(arrays_a.get("features", [])) == len(arrays_b.get("features", [])))
        if same_examples and len(arrays_a.get("features", [])):
            numbers["cka_features"] = linear_cka(arrays_a["features"], arrays_b["features"])
        else:
            notes.append("the two backbones' cached features are not of the same examples: no feature CKA")
        layers_a, layers_b = arrays_a.get("layers", {}), arrays_b.get("layers", {})
        heat = None
        if layers_a and layers_b and arrays_a.get("ids") == arrays_b.get("ids"):
            heat = np.array([[linear_cka(layers_a[x], layers_b[y]) for y in layers_b] for x in layers_a])
            numbers["cka_layers"] = {"rows": list(layers_a), "columns": list(layers_b), "values": heat.tolist(),
                                     "images": len(arrays_a["ids"])}
        html = _differences_html(numbers, a.numbers, b.numbers, heat, list(layers_a), list(layers_b))
        return SectionResult(self.name, self.title, numbers, html, notes)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(overall: dict[str, Any], per_layer: dict[str, dict[str, Any]]) -> str:
    keys = ("rankme", "rankme_share", "alpha", "alpha_r2", "nc1", "n", "d")
    head = "".join(f"<th>{k}</th>" for k in keys)
    first = "".join(f"<td>{_fmt(overall.get(k, '–'))}</td>" for k in keys)
    rows = [f'<tr class="features"><td>probe features</td>{first}</tr>']
    for name, values in per_layer.items():
        cells = "".join(f"<td>{_fmt(values.get(k, '–'))}</td>" for k in keys)
        rows.append(f"<tr><td>{name}</td>{cells}</tr>")
    return (f'<table class="numbers"><thead><tr><th>features</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
            "</table>")


def _plots(lam: np.ndarray, overall: dict[str, Any], per_layer: dict[str, dict[str, Any]], label: str) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from unirep.inspect.figures import plotly_div

    fig = make_subplots(rows=1, cols=2, subplot_titles=("covariance eigenspectrum (log-log)", "per layer"))
    index = np.arange(1, len(lam) + 1)
    fig.add_trace(go.Scatter(x=index, y=lam, mode="lines", name="λ_i"), row=1, col=1)
    fit = fit_power_law(lam)
    if np.isfinite(fit["alpha"]):
        line = np.exp(fit["intercept"] - fit["alpha"] * np.log(index))
        fig.add_trace(go.Scatter(x=index, y=line, mode="lines", name=f"fit α={fit['alpha']:.3g}",
                                 line={"dash": "dash"}), row=1, col=1)
    fig.update_xaxes(type="log", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=1)
    names = list(per_layer)
    for key in ("rankme_share", "alpha", "nc1"):
        fig.add_trace(go.Scatter(x=names, y=[per_layer[n].get(key) for n in names], mode="lines+markers",
                                 name=key), row=1, col=2)
    fig.update_layout(height=340, margin={"l": 40, "r": 10, "t": 40, "b": 40}, title_text=label)
    return plotly_div(fig)


def _differences_html(numbers: dict[str, Any], a: dict[str, Any], b: dict[str, Any], heat: np.ndarray | None,
                      rows: list[str], columns: list[str]) -> str:
    cells = "".join(f"<tr><td>{k}</td><td>{_fmt(a['features'].get(k))}</td><td>{_fmt(b['features'].get(k))}</td>"
                    f"<td class=\"delta\">{_fmt(v)}</td></tr>" for k, v in numbers["delta"].items())
    if "cka_features" in numbers:
        cells += f'<tr><td>linear CKA (probe features)</td><td colspan="3">{numbers["cka_features"]:.4f}</td></tr>'
    out = (f'<table class="numbers"><thead><tr><th>number</th><th>A</th><th>B</th><th>B − A</th></tr></thead>'
           f"<tbody>{cells}</tbody></table>")
    if heat is not None:
        import plotly.graph_objects as go

        from unirep.inspect.figures import plotly_div

        fig = go.Figure(go.Heatmap(z=heat, x=columns, y=rows, zmin=0, zmax=1, colorscale="Viridis",
                                   text=np.round(heat, 2), texttemplate="%{text}"))
        fig.update_layout(height=360, margin={"l": 60, "r": 10, "t": 30, "b": 40},
                          title_text="linear CKA between layers (rows: A, columns: B)")
        out += plotly_div(fig)
    return out
