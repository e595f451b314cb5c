"""The leaderboard as Markdown tables (one per suite and protocol), for the README and pull requests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from unirep.leaderboard.agreement import agreement_matrix, reference_protocols
from unirep.leaderboard.blocks import ALL_TASKS, Block
from unirep.leaderboard.model import SHOWN_AGGREGATES, Leaderboard
from unirep.leaderboard.ood_section import ood_markdown
from unirep.leaderboard.seeds import seed_display, single_seed_note


def render_markdown(board: Leaderboard) -> str:
    lines = [
        "# unirep leaderboard",
        "",
        f"{board.n_records} result records · {len(board.backbones)} backbones · {len(board.tasks)} tasks · "
        f"reference for mNRG: {board.reference or 'none'} · CIs: {100 * board.level:g}% percentile bootstrap over "
        f"test examples ({board.n_boot} resamples). Built by `unirep build` from the records alone; "
        "the sortable page with plots is `index.html`.",
    ]
    scores = {(c.backbone, c.task, c.protocol): c.score for c in board.cells}
    secondary = {c.key: c.secondary_scores for c in board.cells if c.secondary_scores}
    for block in board.blocks:
        title = "all tasks" if block.suite == ALL_TASKS else f"suite {block.suite}"
        lines += ["", f"## {block.protocol} · {title} ({len(block.tasks)})", "", block_table(block, scores, secondary)]
        one_seed = single_seed_note([b for b in board.single_seed if b in block.done])
        if block.notes or one_seed:
            lines += ["", *(f"- {note}" for note in [*([one_seed] if one_seed else []), *block.notes])]
    lines += seed_section(board)
    lines += agreement_section(board)
    lines += ood_markdown(board.ood, board.level, board.n_boot)
    if board.skipped:
        lines += ["", f"Skipped {len(board.skipped)} malformed record(s):", ""]
        lines += [f"- `{path}`: {reason}" for path, reason in board.skipped]
    return "\n".join(lines) + "\n"


def seed_section(board: Leaderboard) -> list[str]:
    """Markdown lines of the training-seed groups: one table per protocol (none without `@seed<k>` labels)."""
    if board.seeds.empty:
        return []
    lines = ["", "## Training seeds", "", SEEDS_TEXT.format(level=f"{100 * board.level:g}",
                                                             reference=board.reference or "none")]
    for protocol in [p for p in board.protocols if p in set(board.seeds["protocol"])]:
        frame = seed_display(board.seeds, protocol).rename(columns=_escape)
        frame["backbone"] = frame["backbone"].map(_escape)
        lines += ["", f"### {protocol}", "",
                  frame.to_markdown(index=False, disable_numparse=True,
                                    colalign=["left"] + ["right"] * (len(frame.columns) - 1))]
    if board.seed_notes:
        lines += ["", *(f"- {note}" for note in board.seed_notes)]
    return lines


SEEDS_TEXT = ("Backbones labelled `<name>@seed<k>` grouped over their training seeds (the source comparison's "
              "`seeds` list): mean over seeds ± half-width of the {level}% Student-t interval over seeds, per task "
              "and for the mean over tasks and mNRG vs {reference} (paired seed by seed when it is one seed of a "
              "group). This is training-seed variance, which the test-example CIs above do not show; a difference "
              "smaller than the intervals is not settled. Also in `seeds.csv`.")


def agreement_section(board: Leaderboard) -> list[str]:
    """Markdown lines of the estimator agreement: one table per reference protocol (none without estimators)."""
    table = board.agreement
    if table.empty:
        return []
    lines = ["", "## Estimator agreement", "", AGREEMENT_TEXT]
    for reference in reference_protocols(list(table["reference"])):
        matrix = agreement_matrix(table, reference).rename(columns=_escape)
        matrix["estimator"] = matrix["estimator"].map(_escape)
        lines += ["", f"### vs {reference}", "",
                  matrix.to_markdown(index=False, disable_numparse=True,
                                     colalign=["left"] + ["right"] * (len(matrix.columns) - 1))]
    return lines


AGREEMENT_TEXT = ("Kendall τ-b / weighted τ (hyperbolic weigher, `scipy.stats.weightedtau`) between each training-free "
                  "estimator's scores and the reference protocol's test scores, over the backbones that have both, "
                  "per task with at least 3 such backbones; *mean* is over those tasks. 1 = same ranking, "
                  "0 = unrelated, −1 = reversed. Also in `agreement.csv`.")


def block_table(block: Block, scores: dict[tuple[str, str, str], float],
                secondary: dict[tuple[str, str, str], dict[str, float]] | None = None) -> str:
    """Ranked backbones first (by the headline aggregate), then the incomplete ones; aggregates with CIs. A task
    cell with `secondary` scores (e.g. detection's mAP@.5) shows them after the score, in parentheses."""
    ranks = block.ranks()
    order = sorted(block.done, key=lambda b: (np.nan_to_num(ranks.get(b, np.nan), nan=np.inf), b))
    shown = [a for a in SHOWN_AGGREGATES if a in block.names]
    rows = []
    for backbone in order:
        row = {"rank": f"{int(ranks[backbone])}" if backbone in ranks.index else "–", "backbone": _escape(backbone)}
        for name in shown:
            row[SHOWN_AGGREGATES[name]] = _with_ci(block, backbone, name)
        row["tasks"] = f"{block.done[backbone]}/{len(block.tasks)}"
        for task in block.tasks:
            score = scores.get((backbone, task, block.protocol))
            row[_escape(task)] = "–" if score is None else f"{score:.2f}"
            others = (secondary or {}).get((backbone, task, block.protocol))
            if score is not None and others:
                row[_escape(task)] += " (" + ", ".join(f"{k} {v:.2f}" for k, v in others.items()) + ")"
        rows.append(row)
    frame = pd.DataFrame(rows)
    align = ["right" if c not in ("backbone",) else "left" for c in frame.columns]
    return frame.to_markdown(index=False, disable_numparse=True, colalign=align)


def _with_ci(block: Block, backbone: str, name: str) -> str:
    if backbone not in block.aggregates.index:
        return "–"
    row = block.aggregates.loc[backbone]
    text = f"{row[name]:.2f}"
    if np.isfinite(row[f"{name}_low"]) and np.isfinite(row[f"{name}_high"]):
        text += f" [{row[f'{name}_low']:.2f}, {row[f'{name}_high']:.2f}]"
    return text


def _escape(text: str) -> str:
    # A pipe would end the Markdown cell early.
    return text.replace("|", "\\|")
