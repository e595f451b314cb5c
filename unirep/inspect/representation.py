"""Representation-level numbers: effective rank (RankMe), the eigenspectrum's power-law decay (alpha-ReQ), neural
collapse's within/between-class variability (NC1), and, for `unirep inspect A B`, linear CKA between the backbones.

Definitions (pure numpy, float64; the section below applies them):
- RankMe (Garrido et al., ICML 2023): exp of the entropy of the normalised singular values of the (N, D) embedding
  matrix, p_k = sigma_k / sum(sigma) + eps, eps = 1e-7 as in the paper; features with k equal non-zero singular
  values give k. Not centred (as in the paper).
- alpha-ReQ (Agrawal et al., NeurIPS 2022): the slope alpha of log lambda_i = -alpha log i + c, least squares over
  the eigenvalues lambda_i of the centred features' covariance that are above 1e-10 of the largest (the numerical
  rank). alpha near 1 is the decay the paper links to good generalisation; small alpha = flat (whitened) spectrum.
- NC1 (Papyan et al., PNAS 2020): tr(Sigma_W Sigma_B^+) / C, Sigma_W the within-class covariance (1/N), Sigma_B the
  covariance of the class means around the global mean (1/C). 0 = every class collapsed to its mean. Computed as
  mean_i |M^+ (h_i - mu_{y_i})|^2 with M the (D, C) centred class means (Sigma_B = M M^T / C), never D x D.
- Linear CKA (Kornblith et al., ICML 2019): |Y^T X|_F^2 / (|X^T X|_F |Y^T Y|_F) on centred features of the same
  examples; 1 for X and any orthogonal rotation (or isotropic scaling) of X.

Why these are not registered as transferability estimators (unirep/estimators): the registry's contract is a score
where higher means "transfers better" that depends on the labels (its property tests hold every estimator to
"informative features beat shuffled labels"); RankMe and alpha-ReQ read no labels and NC1 is lower-is-better, so
registering them would break that contract and the leaderboard's estimator-vs-probe agreement. The functions here
import only numpy, so an estimator wrapping them later can move them below unirep.inspect without a second copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unirep.inspect.sections import Section, SectionResult, register_section

RANKME_EPS = 1e-7
SPECTRUM_RTOL = 1e-10


def singular_values(features: np.ndarray) -> np.ndarray:
    """Singular values of (N, D) features, from the smaller Gram matrix (O(N D min(N, D)))."""
    X = np.asarray(features, dtype=np.float64)
    gram = X @ X.T if X.shape[0] <= X.shape[1] else X.T @ X
    return np.sqrt(np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None))


def rankme(features: np.ndarray, eps: float = RANKME_EPS) -> float:
    """RankMe effective rank of (N, D) embeddings (Garrido et al. 2023, eq. 1)."""
    sigma = singular_values(features)
    if sigma.sum() <= 0:
        return 0.0
    p = sigma / sigma.sum() + eps
    return float(math.exp(-np.sum(p * np.log(p))))


def covariance_spectrum(features: np.ndarray) -> np.ndarray:
    """Eigenvalues (descending) of the centred features' covariance (1/N), those above SPECTRUM_RTOL of the largest."""
    X = np.asarray(features, dtype=np.float64)
    X = X - X.mean(axis=0, keepdims=True)
    lam = singular_values(X) ** 2 / len(X)
    return lam[lam > lam[0] * SPECTRUM_RTOL] if len(lam) and lam[0] > 0 else lam[:0]


def alpha_req(features: np.ndarray) -> dict[str, float]:
    """alpha of the eigenspectrum power law lambda_i ~ i^-alpha (Agrawal et al. 2022): {"alpha", "r2", "n_fit"}."""
    lam = covariance_spectrum(features)
    return fit_power_law(lam)


def fit_power_law(eigenvalues: np.ndarray) -> dict[str, float]:
    """Least-squares fit of log lambda_i = -alpha log i + c over all given eigenvalues (i = 1, 2, ...)."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if len(lam) < 2:
        return {"alpha": float("nan"), "r2": float("nan"), "n_fit": int(len(lam))}
    x, y = np.log(np.arange(1, len(lam) + 1)), np.log(lam)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    r2 = 1.0 - float(residual @ residual) / float(((y - y.mean()) ** 2).sum()) if np.ptp(y) > 0 else 1.0
    return {"alpha": float(-slope), "r2": r2, "n_fit": int(len(lam)), "intercept": float(intercept)}


def nc1(features: np.ndarray, labels: np.ndarray, rtol: float = 1e-8) -> float:
    """NC1 = tr(Sigma_W Sigma_B^+) / C (Papyan et al. 2020); singular values of M below rtol of the largest are 0."""
    X = np.asarray(features, dtype=np.float64)
    classes, y = np.unique(np.asarray(labels), return_inverse=True)
    means = np.stack([X[y == c].mean(axis=0) for c in range(len(classes))])  # (C, D)
    centred_means = means - X.mean(axis=0, keepdims=True)
    # The global mean is the mean of the examples; with unequal class sizes the class means do not average to it,
    # as in Papyan et al.'s definition.
    m_pinv = np.linalg.pinv(centred_means.T, rcond=rtol)  # (C, D) = M^+
    within = X - means[y]
    return float(np.mean(np.sum((within @ m_pinv.T) ** 2, axis=1)))


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA between (N, D1) and (N, D2) features of the same N examples (Kornblith et al. 2019)."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if len(X) != len(Y):
        raise ValueError(f"CKA needs the same examples: {len(X)} vs {len(Y)} rows")
    X = X - X.mean(axis=0, keepdims=True)
    Y = Y - Y.mean(axis=0, keepdims=True)
    if len(X) < max(X.shape[1], Y.shape[1]):  # the N x N Gram form is cheaper
        K, L = X @ X.T, Y @ Y.T
        num, den = float(np.sum(K * L)), math.sqrt(float(np.sum(K * K)) * float(np.sum(L * L)))
    else:
        num = float(np.sum((Y.T @ X) ** 2))
        den = math.sqrt(float(np.sum((X.T @ X) ** 2)) * float(np.sum((Y.T @ Y) ** 2)))
    return num / den if den > 0 else float("nan")


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

    def run(self, ctx) -> SectionResult:
        settings = ctx.section_settings(self.name, {"layer_images": ctx.n_images, "splits": "train+val"})
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
