"""The leaderboard as one static HTML page that works offline (opened from disk, no network).

The table is DataTables through itables' offline mode (its bundle is embedded in the page): sortable by any
header, filtered by suite and protocol with search panes, every row shown (no paging, no down-sampling).
The figures are plotly (per-task bars with CIs, universality vs. one axis); plotly.js is written once next to
the page under assets/. Nothing in the page depends on the build time, so rebuilding gives the same bytes.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import plotly.offline
from itables import options as itables_options
from itables.javascript import generate_init_offline_itables_html, to_html_datatable
from itables.typing import JavascriptFunction
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from unirep.fileio import atomic_write_text
from unirep.leaderboard.agreement import agreement_matrix, reference_protocols
from unirep.leaderboard.blocks import Block
from unirep.leaderboard.model import SHOWN_AGGREGATES, Leaderboard, headline_block
from unirep.leaderboard.ood_section import OOD_TEXT, ood_page_tables
from unirep.leaderboard.seeds import seed_display, single_seed_note
from unirep.leaderboard.tables import Cell, shown_versions
from unirep.resources import TEMPLATES_DIR

TABLE_ID = "leaderboard"
FIXED_COLUMNS = ("suite", "protocol", "rank", "backbone")
PROVENANCE_COLUMNS = ("date", "config", "versions", "weights")
TEMPLATES = TEMPLATES_DIR
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def plotly_asset_name() -> str:
    return f"plotly-{plotly.offline.get_plotlyjs_version()}.min.js"


def write_assets(out: Path) -> list[Path]:
    """plotly.js next to the page (a classic script, so it loads from file:// where ES modules cannot)."""
    return [atomic_write_text(out / "assets" / plotly_asset_name(), plotly.offline.get_plotlyjs())]


def render_page(board: Leaderboard) -> str:
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                              keep_trailing_newline=True)
    template = environment.get_template("page.html.j2")
    bars = bars_figure(board)
    universality = universality_figure(board)
    return template.render(
        board=board,
        table_id=TABLE_ID,
        summary=summary(board),
        datatables_init=generate_init_offline_itables_html(itables_options.dt_bundle),
        table=table_html(board),
        bars=_figure_html(bars, "task-bars"),
        universality=_figure_html(universality, "universality-plot"),
        axis_hint=axis_hint(board),
        definitions=definitions(board.blocks),
        configs={d: json.dumps(c, indent=2, sort_keys=True, default=str) for d, c in sorted(board.configs.items())},
        plotly_src=f"assets/{plotly_asset_name()}",
        agreement=agreement_tables(board),
        seed_tables=seed_tables(board),
        ood_tables=ood_page_tables(board.ood),
        ood_text=OOD_TEXT.replace("`", "").format(level=f"{100 * board.level:g}", n_boot=board.n_boot),
        one_seed_note=single_seed_note(board.single_seed),
    )


def summary(board: Leaderboard) -> dict:
    dates = sorted(c.created_at for c in board.cells) or ["–"]  # none: a board of OoD records only
    return {"records": board.n_records, "backbones": len(board.backbones), "tasks": len(board.tasks),
            "protocols": ", ".join(board.protocols), "first": dates[0][:10], "last": dates[-1][:10],
            "level": f"{100 * board.level:g}", "n_boot": board.n_boot, "reference": board.reference or "none"}


# ------------------------------------------------------------------------------------------------------ table


def page_frame(board: Leaderboard) -> tuple[pd.DataFrame, list[str]]:
    """One row per (suite, protocol, backbone): aggregates (+ hidden CI text), task scores, provenance.

    Returns the frame and the aggregate columns shown (each followed by its hidden "<name> CI" column).
    """
    by_key = {c.key: c for c in board.cells}
    shown = [a for a in SHOWN_AGGREGATES if any(a in b.names for b in board.blocks)]
    rows = []
    for block in board.blocks:
        ranks = block.ranks()
        order = sorted(block.done, key=lambda b: (np.nan_to_num(ranks.get(b, np.nan), nan=np.inf), b))
        for backbone in order:
            cells = [by_key[(backbone, t, block.protocol)] for t in block.tasks
                     if (backbone, t, block.protocol) in by_key]
            row = {"suite": block.suite, "protocol": block.protocol, "rank": _number(ranks.get(backbone), 0),
                   "backbone": backbone}
            for name in shown:
                label = SHOWN_AGGREGATES[name]
                row[label], row[f"{label} CI"] = _aggregate_cell(block, backbone, name)
            row["tasks"] = f"{block.done[backbone]}/{len(block.tasks)}"
            scores = {c.task: c.score for c in cells}
            row.update({task: _number(scores.get(task), 2) for task in board.tasks})
            row.update(_provenance(cells))
            rows.append(row)
    frame = pd.DataFrame(rows)
    # The table is rendered with allow_html (for the config links), so every other text is escaped here.
    escaped = [c for c in frame.columns if c != "config" and frame[c].map(lambda v: isinstance(v, str)).any()]
    frame[escaped] = frame[escaped].map(lambda v: html.escape(v) if isinstance(v, str) else v)
    return frame.rename(columns={t: html.escape(t) for t in board.tasks}), [SHOWN_AGGREGATES[a] for a in shown]


def _aggregate_cell(block: Block, backbone: str, name: str) -> tuple[float | None, str]:
    if name not in block.names or backbone not in block.aggregates.index:
        return None, ""
    row = block.aggregates.loc[backbone]
    low, high = row[f"{name}_low"], row[f"{name}_high"]
    ci = f"[{low:.2f}, {high:.2f}]" if np.isfinite(low) and np.isfinite(high) else ""
    return _number(row[name], 2), ci


def _provenance(cells: Sequence[Cell]) -> dict:
    records = [r for c in cells for r in c.records]
    digests = sorted({d for c in cells for d in c.config_digest.split(";")})
    weights = sorted({str(r.backbone_identity.get("weights_id", "")) for r in records} - {""})
    return {
        "date": max(c.created_at for c in cells)[:10],
        # The config cell links to the full resolved config in the provenance section (built as HTML, so the
        # digests are escaped here and the other string cells in page_frame).
        "config": " ".join(f'<a href="#config-{html.escape(d)}">{html.escape(d)}</a>' for d in digests),
        "versions": shown_versions(records),
        "weights": "; ".join(w if len(w) <= 24 else w[:24] + "…" for w in weights),
    }


def _number(value: object, decimals: int) -> float | int | None:
    """A rounded number, or None (empty cell, sorted last) for missing values."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    return int(value) if decimals == 0 else round(float(value), decimals)


def table_html(board: Leaderboard) -> str:
    if not board.cells:
        return '<p class="note">No probe or estimator records: this board holds the OoD detection section only.</p>'
    frame, aggregate_columns = page_frame(board)
    columns = list(frame.columns)
    column_defs = [{"targets": [columns.index(f"{a} CI") for a in aggregate_columns], "visible": False,
                    "searchable": False}]
    for name in aggregate_columns:
        column_defs.append({"targets": columns.index(name), "render": _render_number(2, columns.index(f"{name} CI"))})
    tasks = [i for i, c in enumerate(columns) if c in {html.escape(t) for t in board.tasks}]
    column_defs.append({"targets": tasks, "render": _render_number(2)})
    column_defs.append({"targets": columns.index("rank"), "render": _render_number(0)})
    numeric = tasks + [columns.index(c) for c in aggregate_columns] + [columns.index("rank")]
    column_defs.append({"targets": sorted(numeric), "className": "dt-right"})
    return to_html_datatable(
        frame,
        table_id=TABLE_ID,
        connected=False,
        showIndex=False,
        paging=False,  # every row on one page: the leaderboard is small, and hidden rows would mislead
        maxBytes=0,
        maxRows=0,
        maxColumns=0,
        allow_html=True,
        format_floats_in_python=False,
        text_in_header_can_be_selected=False,  # a click anywhere on a header sorts by it
        order=[],  # keep the built order (suite, protocol, rank) until a header is clicked
        classes="display compact cell-border",
        columnDefs=column_defs,
        layout={"top1": "searchPanes"},
        searchPanes={"columns": [columns.index("suite"), columns.index("protocol")], "layout": "columns-2",
                     "cascadePanes": True, "dtOpts": {"scrollY": "7em", "scrollCollapse": True}},
    )


def _render_number(decimals: int, ci_column: int | None = None) -> JavascriptFunction:
    """Show a number with fixed decimals (and its CI from a hidden column) but sort on the number itself.

    A missing value (NaN in the data) becomes an empty cell, which DataTables sorts as the smallest number.
    """
    ci = f" + (row[{ci_column}] ? ' <span class=\"ci\">' + row[{ci_column}] + '</span>' : '')" if ci_column else ""
    return JavascriptFunction(
        "function (data, type, row, meta) { if (data === null || Number.isNaN(data)) { return ''; } "
        f"return type === 'display' ? data.toFixed({decimals}){ci} : data; }}"
    )


def seed_tables(board: Leaderboard) -> list[dict]:
    """Per protocol with `<name>@seed<k>` groups: {"protocol", "columns", "rows"} of mean ± t-interval text cells."""
    tables = []
    for protocol in [p for p in board.protocols if p in set(board.seeds["protocol"])]:
        frame = seed_display(board.seeds, protocol)
        tables.append({"protocol": protocol, "columns": list(frame.columns), "rows": frame.values.tolist()})
    return tables


def agreement_tables(board: Leaderboard) -> list[dict]:
    """Per reference protocol: {"reference", "columns", "rows"} of the estimator agreement (text cells; the
    template escapes them)."""
    tables = []
    for reference in reference_protocols(list(board.agreement["reference"])):
        matrix = agreement_matrix(board.agreement, reference)
        tables.append({"reference": reference, "columns": list(matrix.columns),
                       "rows": matrix.astype(str).values.tolist()})
    return tables


# ---------------------------------------------------------------------------------------------------- figures


def bars_figure(board: Leaderboard) -> go.Figure | None:
    """Grouped bars: one group per task, one bar per backbone, CI whiskers; a menu switches the protocol."""
    if not board.cells:
        return None
    long = board.long
    traces, visible_by_protocol = [], {}
    for p_index, protocol in enumerate(board.protocols):
        rows = long[long["protocol"] == protocol]
        start = len(traces)
        for backbone in board.backbones:
            mine = rows[rows["backbone"] == backbone].set_index("task").reindex(board.tasks)
            if mine["score"].isna().all():
                continue
            traces.append(go.Bar(
                name=backbone, x=board.tasks, y=mine["score"].round(2).tolist(), legendgroup=backbone,
                visible=p_index == 0, hovertemplate=f"{html.escape(backbone)}<br>%{{x}}: %{{y:.2f}}<extra></extra>",
                error_y={"type": "data", "symmetric": False, "visible": bool(mine["ci_high"].notna().any()),
                         "array": (mine["ci_high"] - mine["score"]).round(3).tolist(),
                         "arrayminus": (mine["score"] - mine["ci_low"]).round(3).tolist()},
            ))
        visible_by_protocol[protocol] = (start, len(traces))
    figure = go.Figure(traces)
    figure.update_layout(barmode="group", template="plotly_white", height=420, margin={"t": 60, "b": 40},
                         title=f"Per-task scores ({board.protocols[0]}), {100 * board.level:g}% bootstrap CIs",
                         yaxis_title="test score", legend_title="backbone")
    if len(board.protocols) > 1:
        buttons = []
        for protocol, (start, stop) in visible_by_protocol.items():
            mask = [start <= i < stop for i in range(len(traces))]
            buttons.append({"label": protocol, "method": "update", "args": [
                {"visible": mask},
                {"title": f"Per-task scores ({protocol}), {100 * board.level:g}% bootstrap CIs"}]})
        # Top left, above the plot: the top right belongs to plotly's mode bar.
        figure.update_layout(updatemenus=[{"buttons": buttons, "x": 0.0, "xanchor": "left", "y": 1.16,
                                           "yanchor": "bottom", "direction": "down", "showactive": True}],
                             title={"x": 0.5, "xanchor": "center"})
    return figure


def universality_figure(board: Leaderboard) -> go.Figure | None:
    """Headline aggregate (all tasks) vs. the chosen axis, one marker per backbone, one trace per protocol."""
    traces = []
    for protocol in board.protocols:
        block = headline_block(board, protocol)
        if block is None or block.headline is None:
            continue
        ranked = [b for b in block.aggregates.index if b in board.axis_values]
        if not ranked:
            continue
        values = block.aggregates.loc[ranked]
        y = values[block.headline]
        error = {"type": "data", "symmetric": False, "visible": bool(values[f"{block.headline}_high"].notna().any()),
                 "array": (values[f"{block.headline}_high"] - y).round(3).tolist(),
                 "arrayminus": (y - values[f"{block.headline}_low"]).round(3).tolist()}
        traces.append(go.Scatter(
            x=[board.axis_values[b] for b in ranked], y=y.round(3).tolist(), mode="markers+text",
            text=[html.escape(b) for b in ranked], textposition="top center", name=f"{protocol} ({block.headline})",
            error_y=error, hovertemplate="%{text}<br>" + f"{board.axis}: %{{x}}<br>{block.headline}: %{{y:.2f}}"
            "<extra></extra>"))
    if not traces:
        return None
    x_values = [x for t in traces for x in t.x]
    log_x = min(x_values) > 0 and max(x_values) / min(x_values) > 100
    figure = go.Figure(traces)
    figure.update_layout(template="plotly_white", height=420, margin={"t": 60, "b": 40},
                         title=f"Universality (all tasks) vs. {board.axis}",
                         xaxis={"title": board.axis, "type": "log" if log_x else "linear"},
                         yaxis_title="universality (headline aggregate)", legend_title="protocol")
    return figure


def _figure_html(figure: go.Figure | None, div_id: str) -> str:
    if figure is None:
        return ""
    # A fixed div id (plotly's default is a random uuid) keeps the page byte-identical across rebuilds.
    return pio.to_html(figure, include_plotlyjs=False, full_html=False, div_id=div_id, config=PLOT_CONFIG,
                       validate=True)


def axis_hint(board: Leaderboard) -> str:
    """Why the universality plot is missing, and which axes the records do offer."""
    if board.axis_values:
        return ""
    # The val sweep is per task, not a property of the backbone: no axis.
    extra = ({k: v for k, v in r.extra.items() if k != "val_sweep"} for c in board.cells for r in c.records)
    identity = (r.backbone_identity for c in board.cells for r in c.records)
    offered = sorted({key for mapping in (*identity, *extra) for key in _numeric_keys(mapping)})
    listed = ", ".join(offered) if offered else "none"
    return (f"No record states {board.axis!r} in backbone_identity or extra, so universality is not plotted "
            f"against it; rebuild with --axis NAME, one of: {listed}.")


def _numeric_keys(mapping: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            keys.extend(_numeric_keys(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            keys.append(f"{prefix}{key}")
    return keys


def definitions(blocks: Sequence[Block]) -> dict[str, str]:
    found: dict[str, str] = {}
    for block in blocks:
        for name, text in block.attrs.get("definitions", {}).items():
            found.setdefault(name, text)
    return {name: found[name] for name in sorted(found)}
