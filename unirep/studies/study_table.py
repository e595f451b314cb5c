"""The study's tables, built only from its records (unirep.ood.records).

- `network_table`: one row per (network, benchmark, score): ID top-1, near / far AUROC and FPR95 (OoD accepted at
  95 % ID recall, `fpr95_id_recall`), with bootstrap CIs over the test examples (unirep.ood.intervals: ID test and
  each OoD set resampled apart, the same resamples for every network of a benchmark).
- `strategy_table`: one row per (backbone, benchmark, strategy group, score): the mean over fine-tuning seeds and
  the 95 % Student-t half-width (NaN for the one frozen network, whose spread is its bootstrap CI).
- `difference_table`: each fine-tuned group minus `frozen`, per seed, as mean ± t half-width: the comparison
  "does fine-tuning improve ID accuracy, and OoD detection?" rests on; `significant` when the interval excludes 0.
- `markdown_tables`: per benchmark, scores x strategy groups with near / far AUROC cells (the README's layout).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from unirep.leaderboard.seeds import t_interval
from unirep.ood.intervals import ResampleCache, record_intervals
from unirep.ood.records import OodRecord

FPR95 = "fpr95_id_recall"  # the share of OoD accepted at the threshold keeping 95 % of ID
METRICS = ("id_acc", "near_auroc", "far_auroc", "near_fpr95", "far_fpr95")
KEYS = ["backbone", "benchmark", "group", "score"]


def network_table(records: Sequence[OodRecord], n_boot: int = 1000, level: float = 0.95) -> pd.DataFrame:
    cache = ResampleCache()  # the resamples of a benchmark's sets are shared by every network (paired)
    rows = []
    for r in records:
        hyper = r.classifier_hyperparameters
        row = {"backbone": hyper["base"], "benchmark": r.benchmark, "group": hyper["group"], "score": r.ood_score,
               "strategy": hyper["strategy"], "seed": hyper["seed"], "alpha": hyper["alpha"], "network": r.backbone,
               "id_acc": r.id_accuracy}
        for group in ("near", "far"):
            if group in r.metrics:
                row[f"{group}_auroc"] = r.metrics[group]["auroc"]
                row[f"{group}_fpr95"] = r.metrics[group][FPR95]
        if n_boot:
            intervals = record_intervals(r, n_boot=n_boot, level=level, cache=cache)
            wanted = {"id_acc": ("id_accuracy", "top1"), "near_auroc": ("near", "auroc"),
                      "far_auroc": ("far", "auroc"), "near_fpr95": ("near", FPR95), "far_fpr95": ("far", FPR95)}
            for column, (part, metric) in wanted.items():
                if part in intervals:
                    ci = intervals[part][metric]
                    row[f"{column}_low"], row[f"{column}_high"] = ci.low, ci.high
        rows.append(row)
    return pd.DataFrame(rows)


def strategy_table(networks: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    rows = []
    for key, part in networks.groupby(KEYS, sort=True):
        row = dict(zip(KEYS, key, strict=True))
        row["n_seeds"] = len(part)
        for metric in METRICS:
            if metric in part and part[metric].notna().all():
                row[metric], row[f"{metric}_t"] = t_interval(part[metric].to_numpy(), level)
        for metric in METRICS:
            if f"{metric}_low" in part:  # the bootstrap interval's mean half-width over the group's networks
                row[f"{metric}_boot"] = float(np.mean((part[f"{metric}_high"] - part[f"{metric}_low"]) / 2))
        rows.append(row)
    return pd.DataFrame(rows)


def difference_table(networks: pd.DataFrame, reference: str = "frozen", level: float = 0.95) -> pd.DataFrame:
    """Each group minus the reference network, seed by seed (the frozen network has no seeds: it is subtracted from
    every fine-tuned seed), as mean ± t half-width; `significant`: the t-interval excludes 0."""
    rows = []
    for (backbone, benchmark, group, score), part in networks.groupby(KEYS, sort=True):
        if group == reference:
            continue
        ref = networks[(networks.backbone == backbone) & (networks.benchmark == benchmark)
                       & (networks.group == reference) & (networks.score == score)]
        if len(ref) != 1:
            continue
        row = {"backbone": backbone, "benchmark": benchmark, "group": group, "score": score, "n_seeds": len(part)}
        for metric in ("id_acc", "near_auroc", "far_auroc"):
            delta = part[metric].to_numpy() - float(ref[metric].iloc[0])
            mean, half = t_interval(delta, level)
            row[f"d_{metric}"], row[f"d_{metric}_t"] = mean, half
            row[f"d_{metric}_significant"] = bool(np.isfinite(half) and abs(mean) > half)
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_tables(summary: pd.DataFrame, groups: Sequence[str] | None = None) -> str:
    """Per (backbone, benchmark): a row per score, a column per strategy group, cells `near / far` mean AUROC (with
    ± the t half-width over seeds where there are seeds), and an ID top-1 row first."""
    parts = []
    for (backbone, benchmark), part in summary.groupby(["backbone", "benchmark"], sort=True):
        present = list(dict.fromkeys(part.group))
        order = [g for g in (groups or present) if g in present]
        lines = [f"**{backbone} on {benchmark}** (AUROC near / far, mean ± 95 % t half-width over seeds)", "",
                 "| score | " + " | ".join(order) + " |", "|---|" + "---|" * len(order)]
        first = part.drop_duplicates("group").set_index("group")
        lines.append("| ID top-1 | " + " | ".join(_cell(first.loc[g], "id_acc") for g in order) + " |")
        for score, rows in part.groupby("score", sort=True):
            rows = rows.set_index("group")
            cells = [f"{_cell(rows.loc[g], 'near_auroc')} / {_cell(rows.loc[g], 'far_auroc')}" if g in rows.index
                     else "" for g in order]
            lines.append(f"| {score} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _cell(row: pd.Series, metric: str) -> str:
    value, half = row.get(metric, np.nan), row.get(f"{metric}_t", np.nan)
    if not np.isfinite(value):
        return ""
    return f"{value:.1f}" if not np.isfinite(half) else f"{value:.1f}±{half:.1f}"


__all__ = ["FPR95", "difference_table", "markdown_tables", "network_table", "strategy_table"]
