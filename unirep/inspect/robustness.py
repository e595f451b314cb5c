"""Fragility: how far do slight perturbations or degradations of the input push the probe into (confident) errors?

Every registered perturbation of `unirep.inspect.perturbations` (noise, blur, JPEG, contrast, brightness, FGSM,
PGD; their severity tables are documented there) is applied to the same test images, in [0, 1] pixel space, and
the probe + backbone classifier is scored on each: accuracy, mean confidence, expected calibration error
(15 equal-width bins) and the share of confident errors (wrong with p >= 0.9, of all images), as curves over the
severities. `differences(a, b)` gives B - A of accuracy, ECE and confident errors per perturbation and severity.

Settings (`robustness.<key>=...`): perturbations (names, default all), severities (subset of 0..5; 0 is always
included), n_images (default: the report's image budget), batch_size.
"""

from __future__ import annotations

import html as html_lib

from unirep.inspect.perturbations import PERTURBATIONS, SEVERITIES, check_perturbation_settings, evaluate_perturbations
from unirep.inspect.sections import Section, SectionResult, register_section

METRICS = (("accuracy", "accuracy"), ("mean_confidence", "mean confidence"), ("ece", "ECE (15 bins)"),
           ("confident_error_share", "confident errors (p ≥ 0.9)"))
DELTA_METRICS = ("accuracy", "ece", "confident_error_share")


def _as_list(value) -> list | None:
    """A setting given as a list, a comma-separated string ("jpeg,pgd" from the command line) or one value."""
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value) if isinstance(value, list | tuple) else [value]


def _severities(value) -> list | None:
    items = _as_list(value)
    return None if items is None else [int(i) if isinstance(i, str) and i.strip().isdigit() else i for i in items]


DEFAULTS = {"perturbations": None, "severities": None, "n_images": None, "batch_size": 64}


def check_robustness_settings(given: dict | None) -> tuple[list[str], list[int]]:
    """The perturbations and severities of the user's `robustness.*` settings, refused in one line when outside
    the tables; needs no backbone, so a command can call it before any work."""
    given = given or {}
    return check_perturbation_settings(_as_list(given.get("perturbations")), _severities(given.get("severities")))


def robustness_settings(ctx) -> dict:
    """The section's settings with names and severities checked against the tables (one line if not)."""
    settings = ctx.section_settings("robustness", DEFAULTS)
    names, severities = check_robustness_settings(settings)
    n_images = int(settings["n_images"] or ctx.n_images)
    return {"perturbations": names, "severities": severities, "n_images": n_images,
            "batch_size": int(settings["batch_size"])}


def curves_figure(results: dict, metric_names=METRICS, title: str = "Perturbation robustness"):
    """One plotly panel per metric, one line per perturbation over its severities."""
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=len(metric_names), subplot_titles=[label for _, label in metric_names])
    for index, (name, row) in enumerate(results.items()):
        for col, (key, _) in enumerate(metric_names, start=1):
            figure.add_scatter(x=row["severities"], y=row[key], mode="lines+markers", name=name, legendgroup=name,
                               showlegend=col == 1, row=1, col=col,
                               line={"dash": "dash" if row.get("adversarial") else "solid", "color": _colour(index)},
                               marker={"color": _colour(index)}, customdata=row.get("values"),
                               hovertemplate=f"{name} severity %{{x}} ({row.get('parameter')} %{{customdata}})"
                                             f"<br>%{{y:.3f}}<extra></extra>" if row.get("values") else None)
    figure.update_xaxes(title_text="severity", tickvals=list(SEVERITIES))
    figure.update_layout(title=title, height=380, margin={"t": 70})
    return figure


def _colour(index: int) -> str:
    import plotly.colors

    palette = plotly.colors.qualitative.Plotly
    return palette[index % len(palette)]


def severity_table(names: list[str]) -> str:
    """The documented parameter table of the perturbations run, as HTML."""
    head = "".join(f"<th>{s}</th>" for s in SEVERITIES)
    rows = []
    for name in names:
        spec = PERTURBATIONS.get(name)
        cells = "".join(f"<td>{'none' if v is None else _short(v)}</td>" for v in spec.levels)
        rows.append(f"<tr><td>{html_lib.escape(name)}</td><td>{html_lib.escape(spec.parameter)}</td>{cells}</tr>")
    return ("<table><thead><tr><th>perturbation</th><th>parameter</th>" + head + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _short(value: float) -> str:
    return f"{value * 255:g}/255" if 0 < value < 0.05 else f"{value:g}"


@register_section("robustness", title="Fragility: perturbations and adversarial steps", needs_spatial=False)
class RobustnessSection(Section):
    """The probe's accuracy, confidence, ECE and confident errors under corruptions and FGSM/PGD."""

    defaults = DEFAULTS

    def run(self, ctx) -> SectionResult:
        from unirep.inspect.figures import plotly_div

        settings = robustness_settings(ctx)
        images, labels, _ = ctx.pixels("test", settings["n_images"])
        numbers = evaluate_perturbations(ctx.classifier.eval(), images.to(ctx.device), labels.to(ctx.device),
                                         names=settings["perturbations"], severities=settings["severities"],
                                         seed=ctx.seed, batch_size=settings["batch_size"])
        results = numbers["perturbations"]
        clean = next(iter(results.values()))
        worst = min(results.items(), key=lambda item: item[1]["accuracy"][-1])
        confident = max(results.items(), key=lambda item: item[1]["confident_error_share"][-1])
        summary = (f"<p>{len(labels)} test images; clean accuracy {clean['accuracy'][0]:.3f}, ECE {clean['ece'][0]:.3f}"
                   f", confident errors {clean['confident_error_share'][0]:.3f}. At severity "
                   f"{worst[1]['severities'][-1]}, {html_lib.escape(worst[0])} hurts most (accuracy "
                   f"{worst[1]['accuracy'][-1]:.3f}); {html_lib.escape(confident[0])} leaves the most confident "
                   f"errors ({confident[1]['confident_error_share'][-1]:.3f} of the images wrong with p ≥ 0.9). "
                   "Adversarial curves are dashed (FGSM/PGD use the true labels; PGD 10 steps of ε/4, from x).</p>")
        body = summary + plotly_div(curves_figure(results)) + severity_table(settings["perturbations"])
        notes = []
        if len(labels) < 100:
            notes.append(f"Only {len(labels)} images: an accuracy step is {1 / len(labels):.3f}; read the curves as "
                         "coarse (raise robustness.n_images).")
        return SectionResult(self.name, self.title, numbers, body, notes)

    def differences(self, a: SectionResult, b: SectionResult) -> SectionResult | None:
        numbers = differences(a.numbers, b.numbers)
        from unirep.inspect.figures import plotly_div

        keys = tuple((k, f"Δ {label}") for k, label in METRICS if k in DELTA_METRICS)
        body = ("<p>B − A per perturbation and severity (same images, same perturbations).</p>"
                + plotly_div(curves_figure(numbers["perturbations"], keys, "B − A")))
        return SectionResult(self.name, self.title, numbers, body)


def differences(a: dict, b: dict) -> dict:
    """B - A of accuracy, ECE and confident-error share per perturbation and severity both results have."""
    out = {}
    for name, row_a in a["perturbations"].items():
        row_b = b["perturbations"].get(name)
        if row_b is None:
            continue
        common = [s for s in row_a["severities"] if s in row_b["severities"]]
        ia = {s: i for i, s in enumerate(row_a["severities"])}
        ib = {s: i for i, s in enumerate(row_b["severities"])}
        out[name] = {"severities": common, "adversarial": row_a["adversarial"], "parameter": row_a["parameter"],
                     "values": [row_a["values"][ia[s]] for s in common],
                     **{k: [row_b[k][ib[s]] - row_a[k][ia[s]] for s in common] for k in DELTA_METRICS}}
    return {"of": "B - A", "perturbations": out}
