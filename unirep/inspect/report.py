"""Run the sections of an inspection report and write it: one self-contained HTML page and `inspect.json`.

    >>> run = run_sections([ctx_a, ctx_b], resolve_sections(None, [ctx_a, ctx_b]))
    >>> write_report(run, out_dir, config={...})      # out_dir/report.html, out_dir/inspect.json

The page makes no request: images are data URIs and plotly.js is inlined once, in the head (only when a section
drew a plotly figure). With two backbones every section is shown side by side (A left, B right) under its
differences (`Section.differences`), highlighted; a section without `differences` gets a table of the numbers that
differ between the two results. Both files are written atomically (unirep/fileio.py), the JSON first.
"""

from __future__ import annotations

import difflib
import html
import json
import math
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unirep.errors import ConfigError, UnirepError, UnknownNameError
from unirep.inspect import import_sections, list_sections
from unirep.inspect.sections import SECTIONS, Section, SectionResult

REPORT_FORMAT = 1
REPORT_HTML = "report.html"
REPORT_JSON = "inspect.json"


@dataclass
class InspectRun:
    """What the sections found: per section, one result per context (None where skipped) and the differences."""

    labels: list[str]
    sections: list[str]
    results: dict[str, list[SectionResult | None]] = field(default_factory=dict)
    differences: dict[str, SectionResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def resolve_sections(requested: list[str] | None, contexts: list) -> tuple[list[str], dict[str, str]]:
    """The sections to run and those skipped with why. Default: every registered section, skipping (with a note)
    those that need spatial maps on a backbone without them. Named explicitly, an unknown section or one that
    cannot apply is refused in one line naming the sections that do."""
    every = list_sections()
    flat = all(not ctx.spatial for ctx in contexts)
    without_maps = [ctx.label for ctx in contexts if not ctx.spatial]
    applicable = [n for n in every if not (SECTIONS.get(n).needs_spatial and without_maps)]
    if not requested:
        skipped = {n: f"needs spatial activation maps, which {', '.join(without_maps)} does not have"
                   for n in every if n not in applicable}
        return applicable, skipped
    names = []
    for name in requested:
        if name not in SECTIONS:
            close = difflib.get_close_matches(name, every, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise UnknownNameError(f"unknown section {name!r}: {hint}the sections are {', '.join(every)} "
                                   "(`unirep list sections`)")
        if name not in applicable:
            whose = "these backbones have" if flat and len(contexts) > 1 else f"{', '.join(without_maps)} has"
            raise ConfigError(f"section {name!r} needs spatial activation maps, which {whose} none of (no stages "
                              f"with maps): sections that apply are {', '.join(applicable)}")
        if name not in names:
            names.append(name)
    return [n for n in every if n in names], {}


def run_sections(contexts: list, names: list[str], *, skipped: dict[str, str] | None = None,
                 progress: bool = True) -> InspectRun:
    """Each section on each context, in registry order, with a progress bar over (section, backbone) pairs. A
    section that fails on a bug is recorded (its traceback's last line) and the others still run; a UnirepError
    (bad input: a section's settings) stops the run, as every bad input does."""
    from tqdm.auto import tqdm

    import_sections()
    run = InspectRun([ctx.label for ctx in contexts], list(names), skipped=dict(skipped or {}))
    bar = tqdm(total=len(names) * len(contexts), desc="inspect", unit="section", disable=not progress,
               file=sys.stderr)
    for name in names:
        section: Section = SECTIONS.get(name)()
        results: list[SectionResult | None] = []
        start = time.perf_counter()
        for ctx in contexts:
            bar.set_postfix_str(f"{name} / {ctx.label}")
            try:
                results.append(section.run(ctx))
            except UnirepError:
                bar.close()
                raise
            except Exception as exc:  # noqa: BLE001 - one broken section must not cost the others' results
                last = traceback.format_exception_only(type(exc), exc)[-1].strip()
                run.failed[name] = f"{ctx.label}: {last}"
                print(f"unirep inspect: section {name!r} failed on {ctx.label}: {last}", file=sys.stderr)
                results.append(None)
            bar.update(1)
        run.results[name] = results
        if len(results) == 2 and all(r is not None for r in results):
            diff = section.differences(results[0], results[1])
            run.differences[name] = diff if diff is not None else numbers_that_differ(name, section.title, *results)
        run.seconds[name] = time.perf_counter() - start
    bar.close()
    return run


def flatten_numbers(numbers: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested numbers dict as {"a.b.0": value} (bools and settings excluded)."""
    out: dict[str, float] = {}
    if isinstance(numbers, dict):
        for key, value in numbers.items():
            if key == "settings":
                continue
            out.update(flatten_numbers(value, f"{prefix}{key}."))
    elif isinstance(numbers, list | tuple):
        for i, value in enumerate(numbers[:64]):
            out.update(flatten_numbers(value, f"{prefix}{i}."))
    elif isinstance(numbers, int | float) and not isinstance(numbers, bool):
        out[prefix.rstrip(".")] = float(numbers)
    return out


def numbers_that_differ(name: str, title: str, a: SectionResult, b: SectionResult, limit: int = 40) -> SectionResult:
    """The fallback differences: the numbers both results have, largest relative change first."""
    fa, fb = flatten_numbers(a.numbers), flatten_numbers(b.numbers)
    rows = []
    for key in fa.keys() & fb.keys():
        va, vb = fa[key], fb[key]
        if math.isfinite(va) and math.isfinite(vb) and va != vb:
            rows.append((abs(vb - va) / max(abs(va), abs(vb), 1e-12), key, va, vb))
    rows.sort(key=lambda r: (-r[0], r[1]))
    shown = rows[:limit]
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{va:.4g}</td><td>{vb:.4g}</td><td class=\"delta\">"
                   f"{vb - va:+.4g}</td></tr>" for _, k, va, vb in shown)
    table = ('<table class="numbers"><thead><tr><th>number</th><th>A</th><th>B</th><th>B − A</th></tr></thead>'
             f"<tbody>{body}</tbody></table>") if shown else "<p>No number differs.</p>"
    note = f"{len(rows)} of {len(fa.keys() & fb.keys())} shared numbers differ" + (
        f"; the {limit} largest relative changes shown" if len(rows) > limit else "")
    numbers = {"differing": len(rows), "shared": len(fa.keys() & fb.keys()),
               "largest": [{"number": k, "a": va, "b": vb} for _, k, va, vb in shown]}
    return SectionResult(name, title, numbers, f"<p>{note}.</p>{table}")


def report_json(run: InspectRun, contexts: list, config: dict[str, Any]) -> dict[str, Any]:
    """Every number of the report with what produced it."""
    from unirep.runtime import library_versions

    first = contexts[0]
    sections = {}
    for name in run.sections:
        results = run.results.get(name, [])
        sections[name] = {
            "title": SECTIONS.get(name).title,
            "results": {label: ({"numbers": r.numbers, "notes": r.notes} if r is not None else None)
                        for label, r in zip(run.labels, results, strict=False)},
            "seconds": run.seconds.get(name),
        }
        if name in run.differences:
            sections[name]["differences"] = {"numbers": run.differences[name].numbers,
                                             "notes": run.differences[name].notes}
    return {
        "format": REPORT_FORMAT,
        "backbones": [{"label": ctx.label, **ctx.provenance, "layers": {n: i.path for n, i in ctx.layer_info.items()},
                       "spatial": ctx.spatial, "input_size": ctx.input_size} for ctx in contexts],
        "task": {"name": first.task_name, "manifest": first.provenance.get("task"), "classes": first.class_names},
        "seed": first.seed,
        "images": first.n_images,
        "config": config,
        "versions": library_versions(("unirep", "torch", "torchvision", "timm", "captum", "numpy", "scikit-learn",
                                      "plotly", "matplotlib")),
        "sections": sections,
        "skipped": run.skipped,
        "failed": run.failed,
        "seconds": run.seconds,
    }


def write_report(run: InspectRun, contexts: list, out_dir: str | Path, config: dict[str, Any]) -> dict[str, Path]:
    """inspect.json, then report.html, into `out_dir` (atomic writes; a killed run leaves the previous files)."""
    from unirep.fileio import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    data = report_json(run, contexts, config)
    json_path = atomic_write_json(out / REPORT_JSON, data)
    html_path = atomic_write_text(out / REPORT_HTML, render_html(run, contexts, data))
    return {"html": html_path, "json": json_path}


STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 0; color: #1d232a; background: #fafbfc; }
header, main, nav { padding: 0 24px; }
header { background: #1f3a5f; color: #fff; padding: 16px 24px; }
header h1 { margin: 0 0 6px 0; font-size: 1.4em; }
header table td { padding: 1px 10px 1px 0; color: #e8eef6; font-size: 0.9em; }
nav ul { display: flex; flex-wrap: wrap; gap: 6px 18px; list-style: none; padding: 10px 0; margin: 0; }
section.inspect-section { background: #fff; border: 1px solid #dde3ea; border-radius: 6px; margin: 16px 0;
  padding: 8px 16px 16px; }
.notes { color: #5b6673; font-size: 0.9em; margin: 4px 0 8px 0; padding-left: 18px; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.side { min-width: 0; overflow-x: auto; }
.side h3.backbone { margin: 6px 0; font-size: 1em; color: #1f3a5f; }
.differences { background: #fff7db; border-left: 5px solid #e0a800; padding: 6px 12px; margin: 8px 0 12px; }
.differences h3 { margin: 4px 0; }
table.numbers { border-collapse: collapse; font-size: 0.85em; margin: 6px 0; }
table.numbers td, table.numbers th { border: 1px solid #dde3ea; padding: 2px 6px; text-align: right; }
table.numbers td:first-child, table.numbers th:first-child { text-align: left; }
td.delta { background: #ffe9a8; font-weight: 600; }
img.tile { margin: 1px; image-rendering: pixelated; vertical-align: middle; }
img.figure { max-width: 100%; }
.unit { display: flex; align-items: center; gap: 8px; margin: 4px 0; flex-wrap: wrap; }
.unit-label { width: 80px; font-size: 0.85em; }
.skipped, .failed { color: #7a4b00; }
.failed { color: #a3001b; }
"""


def _section_body(result: SectionResult | None, label: str) -> str:
    if result is None:
        return f'<p class="failed">This section failed on {html.escape(label)} (see inspect.json, "failed").</p>'
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    return (f'<ul class="notes">{notes}</ul>' if notes else "") + result.html


def render_html(run: InspectRun, contexts: list, data: dict[str, Any]) -> str:
    """The page: header (backbones, task, probe, settings), a table of contents, one <section> per section."""
    from unirep.inspect.figures import plotly_js

    pair = len(contexts) == 2
    labels = [html.escape(ctx.label) for ctx in contexts]
    title = f"unirep inspect: {' vs '.join(labels)} on {html.escape(contexts[0].task_name)}"
    rows = []
    for letter, ctx in zip("AB" if pair else "·", contexts, strict=False):
        probe = ctx.provenance.get("probe", {})
        agree = ctx.provenance.get("classifier_agreement", {})
        rows.append(f"<tr><td>{letter if pair else 'backbone'}</td><td>{html.escape(ctx.label)}</td><td>input "
                    f"{ctx.input_size} px</td><td>probe: linear, C={_number(probe.get('C'))}, val "
                    f"{_number(probe.get('val_score'))}, test {_number(probe.get('test_score'))}</td><td>classifier "
                    f"= probe on {_number(100 * agree['share']) if agree else '–'} % of test images</td></tr>")
    manifest = contexts[0].provenance.get("task") or {}
    rows.append(f"<tr><td>task</td><td>{html.escape(contexts[0].task_name)}</td><td colspan=\"3\">manifest "
                f"{html.escape(str(manifest.get('digest', '–'))[:16])}, seed {contexts[0].seed}, "
                f"{contexts[0].n_images} images per section</td></tr>")
    nav = "".join(f'<li><a href="#section-{n}">{html.escape(SECTIONS.get(n).title)}</a></li>' for n in run.sections)
    parts = []
    for name in run.sections:
        results = run.results.get(name, [])
        section_title = html.escape(SECTIONS.get(name).title)
        if pair:
            diff = run.differences.get(name)
            diff_html = (f'<div class="differences"><h3>What changed (B vs A)</h3>{_section_body(diff, "both")}'
                         "</div>") if diff is not None else ""
            sides = "".join(f'<div class="side" data-backbone="{labels[i]}"><h3 class="backbone">{"AB"[i]}: '
                            f"{labels[i]}</h3>{_section_body(results[i] if i < len(results) else None, labels[i])}"
                            "</div>" for i in range(2))
            body = f'{diff_html}<div class="pair">{sides}</div>'
        else:
            body = _section_body(results[0] if results else None, labels[0])
        parts.append(f'<section class="inspect-section" id="section-{name}" data-section="{name}">'
                     f"<h2>{section_title}</h2>{body}</section>")
    if run.skipped:
        items = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(why)}</li>" for n, why in run.skipped.items())
        parts.append(f'<section class="skipped" id="skipped"><h2>Skipped</h2><ul>{items}</ul></section>')
    if run.failed:
        items = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(why)}</li>" for n, why in run.failed.items())
        parts.append(f'<section class="failed" id="failed"><h2>Failed</h2><ul>{items}</ul></section>')
    body = "".join(parts)
    # plotly.js once, in the head, so the sections' plotting scripts find it as the page is parsed.
    script = f"<script>{plotly_js()}</script>" if "Plotly.newPlot" in body else ""
    embedded = json.dumps({"sections": run.sections, "labels": run.labels}).replace("</", "<\\/")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style>{script}'
            f'</head><body><header><h1>{title}</h1><table>{"".join(rows)}</table></header><nav><ul>{nav}</ul></nav>'
            f'<main>{body}</main><script type="application/json" id="inspect-index">{embedded}</script>'
            "</body></html>\n")


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) and not isinstance(value, bool) else "–"
