"""How well each training-free estimator ranks the backbones the way real probes do, from the records alone.

For every reference protocol present (the linear probe, and fine-tuning when it was run) and every task where
at least `MIN_BACKBONES` backbones have both an estimator score and a reference score, Kendall's tau-b and the
weighted tau (`unirep.estimators.agreement`) between the two scorings; then the mean over tasks per estimator.
Scores are the leaderboard's cell scores (seed means, newest record per seed), so the table agrees with the
other outputs. A task with too few backbones is named in the notes, not silently dropped.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import pandas as pd

from unirep.estimators import list_estimators
from unirep.estimators.agreement import MIN_BACKBONES, estimator_agreement
from unirep.leaderboard.tables import Cell

# What estimators are judged against: the protocols that measure transfer for real (fnmatch patterns).
REFERENCE_PROTOCOLS = ("linear", "finetune", "finetune-*")
AGREEMENT_COLUMNS = ["reference", "estimator", "task", "n_backbones", "n_tasks", "kendall_tau", "weighted_tau"]
MEAN_ROW = "mean"  # the `task` of the per-estimator mean over tasks


def reference_protocols(protocols: Sequence[str]) -> list[str]:
    """The protocols among `protocols` that estimators are compared with ("linear" first)."""
    found = [p for p in protocols if any(fnmatch.fnmatchcase(p, pattern) for pattern in REFERENCE_PROTOCOLS)]
    return sorted(set(found), key=lambda p: (p != "linear", p))


def agreement_pairs(cells: Sequence[Cell], reference: str) -> pd.DataFrame:
    """One row per (backbone, task, estimator) that also has a percent `reference` score on the same task."""
    estimators = set(list_estimators())
    references = {(c.backbone, c.task): c.score for c in cells if c.protocol == reference and c.is_percent}
    rows = [{"backbone": c.backbone, "task": c.task, "estimator": c.protocol, "estimator_score": c.score,
             "probe_score": references[(c.backbone, c.task)]}
            for c in cells if c.protocol in estimators and (c.backbone, c.task) in references]
    return pd.DataFrame(rows, columns=["backbone", "task", "estimator", "estimator_score", "probe_score"])


def agreement_table(cells: Sequence[Cell]) -> tuple[pd.DataFrame, list[str]]:
    """Per (reference, estimator): one row per compared task, then a `task == "mean"` row (with n_tasks).

    Returns the table (columns `AGREEMENT_COLUMNS`, empty when no estimator meets a reference) and notes naming
    the tasks left out for having fewer than MIN_BACKBONES backbones.

    Example:
        >>> table, notes = agreement_table(build_leaderboard(["runs/eval"]).cells)
        >>> table[table.task == "mean"]
    """
    frames, notes = [], []
    for reference in reference_protocols([c.protocol for c in cells]):
        pairs = agreement_pairs(cells, reference)
        if pairs.empty:
            continue
        result = estimator_agreement(pairs)
        if result.skipped_tasks:
            notes.append(f"estimator agreement vs {reference}: task(s) {', '.join(result.skipped_tasks)} have fewer "
                         f"than {MIN_BACKBONES} backbones with both scores for some estimator: not compared there")
        if result.per_task.empty:
            continue
        mean = result.mean.assign(task=MEAN_ROW)
        frame = pd.concat([result.per_task, mean], ignore_index=True).assign(reference=reference)
        # Each estimator's tasks (sorted), then its mean row.
        frame["_is_mean"] = frame["task"] == MEAN_ROW
        frames.append(frame.sort_values(["estimator", "_is_mean", "task"], kind="stable").drop(columns="_is_mean"))
    if not frames:
        return pd.DataFrame(columns=AGREEMENT_COLUMNS), notes
    table = pd.concat(frames, ignore_index=True)[AGREEMENT_COLUMNS]
    table["n_backbones"] = table["n_backbones"].astype("Int64")
    table["n_tasks"] = table["n_tasks"].astype("Int64")
    return table, notes


def agreement_matrix(table: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Display view for one reference: rows = estimators; columns mean kendall/weighted tau, tasks compared, and
    "kendall / weighted (n=backbones)" per task (2 decimals, "–" where not compared)."""
    mine = table[table["reference"] == reference]
    tasks = sorted(set(mine["task"]) - {MEAN_ROW})
    rows = []
    for estimator, group in mine.groupby("estimator", sort=True):
        by_task = group.set_index("task")
        mean = by_task.loc[MEAN_ROW]
        row = {"estimator": estimator, "mean τ": _fmt(mean["kendall_tau"]), "mean τw": _fmt(mean["weighted_tau"]),
               "tasks": str(int(mean["n_tasks"]))}
        for task in tasks:
            if task in by_task.index:
                got = by_task.loc[task]
                row[task] = f"{_fmt(got['kendall_tau'])} / {_fmt(got['weighted_tau'])} (n={int(got['n_backbones'])})"
            else:
                row[task] = "–"
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(value: float) -> str:
    return "nan" if pd.isna(value) else f"{value:+.2f}"
