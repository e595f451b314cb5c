"""The leaderboard's OoD detection section: near / far AUROC and FPR95 per (backbone, benchmark, classifier, score),
with bootstrap CIs over test examples, from the OoD records (`<run>/ood-records/`, written by `unirep ood` or the
`ood` protocol of `unirep eval`). Nothing is re-run: the records keep every per-example test score.

FPR95 here is `fpr95_id_recall`: the share of OoD examples accepted at the threshold that keeps 95 % of the ID test
examples (lower is better; most papers' convention). The other convention (OpenOOD's, ID rejected at 95 % OoD
recall), AUPR-In and AUPR-Out are in the records. CIs: `unirep.ood.intervals` (unirep's bootstrap resamples, the
ID test set and each OoD set resampled apart, paired across scores and backbones).

`ood.csv` has one row per (backbone, benchmark, classifier, score, set), set being "near", "far" (the means) or a
set's key ("near/<name>", "far/<name>").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

SHOWN = (("auroc", "AUROC"), ("fpr95_id_recall", "FPR95"))
GROUPS = ("near", "far")
KEY = ["backbone", "benchmark", "classifier", "score"]
OOD_COLUMNS = [*KEY, "set", "auroc", "auroc_low", "auroc_high", "fpr95_id_recall", "fpr95_id_recall_low",
               "fpr95_id_recall_high", "id_accuracy", "id_accuracy_low", "id_accuracy_high", "n_id_test", "n_ood_test",
               "hyperparameters"]
OOD_TEXT = ("Post-hoc OoD detection scores (higher = more in-distribution) on the OoD benchmarks, per backbone and "
            "classifier: AUROC and FPR95 in percent, mean over the benchmark's near and far OoD sets. FPR95 = share "
            "of OoD examples accepted at the threshold keeping 95 % of the ID test examples (lower is better; "
            "OpenOOD's other convention, AUPR-In/Out and per-set values: `ood.csv` and the records). In brackets: "
            "{level}% percentile bootstrap CI over test examples ({n_boot} resamples; the ID test set and each OoD "
            "set resampled apart, the same resamples for every score). ID top-1: the classifier on the ID test set.")


def empty_ood_table() -> pd.DataFrame:
    return pd.DataFrame(columns=OOD_COLUMNS)


def ood_table(results_dirs: Sequence[str | Path], n_boot: int = 1000, level: float = 0.95, seed: int = 0
              ) -> tuple[pd.DataFrame, list[str]]:
    """The OoD rows of every record under `results_dirs` (ordered by benchmark, classifier, backbone, score) and
    notes (duplicates superseded). `n_boot=0`: no CIs."""
    from unirep.ood.intervals import ResampleCache, record_intervals
    from unirep.ood.records import load_ood_records

    latest, notes = {}, []
    for root in results_dirs:
        for record in load_ood_records(root):
            key = (record.backbone, record.benchmark, record.classifier, record.ood_score)
            if key in latest:
                newer = max(record.created_at, latest[key].created_at)
                notes.append(f"OoD record {'/'.join(key)} appears twice: the newer one ({newer}) is shown")
                if record.created_at < latest[key].created_at:
                    continue
            latest[key] = record
    cache = ResampleCache()
    rows = []
    for key in sorted(latest, key=lambda k: (k[1], k[2], k[0], k[3])):
        record = latest[key]
        cis = record_intervals(record, n_boot, level, seed, cache=cache) if n_boot else {}
        accuracy = cis.get("id_accuracy", {}).get("top1")
        sets = [g for g in GROUPS if g in record.metrics] + sorted(record.metrics["sets"])
        for name in sets:
            values = record.metrics[name] if name in GROUPS else record.metrics["sets"][name]
            row = dict(zip(KEY, key, strict=True), set=name)
            for metric, _ in SHOWN:
                ci = cis.get(name, {}).get(metric)
                row.update({metric: values[metric], f"{metric}_low": ci.low if ci else np.nan,
                            f"{metric}_high": ci.high if ci else np.nan})
            row.update(id_accuracy=np.nan if record.id_accuracy is None else record.id_accuracy,
                       id_accuracy_low=accuracy.low if accuracy else np.nan,
                       id_accuracy_high=accuracy.high if accuracy else np.nan,
                       n_id_test=len(record.id_test_scores),
                       n_ood_test=_ood_count(record, name),
                       hyperparameters=json.dumps(record.hyperparameters, sort_keys=True))
            rows.append(row)
    return (pd.DataFrame(rows, columns=OOD_COLUMNS) if rows else empty_ood_table()), notes


def _ood_count(record, name: str) -> int:
    return sum(len(v) for k, v in record.ood_test_scores.items() if k == name or k.split("/")[0] == name)


def ood_display(table: pd.DataFrame, benchmark: str) -> pd.DataFrame:
    """One benchmark's rows as text cells: backbone, classifier, score, ID top-1, near / far AUROC and FPR95 with
    their CIs (what the Markdown and the page show)."""
    mine = table[(table["benchmark"] == benchmark) & table["set"].isin(GROUPS)]
    rows = []
    for (backbone, classifier, score), part in mine.groupby(["backbone", "classifier", "score"], sort=False):
        by_set = part.set_index("set")
        first = by_set.iloc[0]
        row = {"backbone": backbone, "classifier": classifier, "score": score,
               "ID top-1": _with_ci(first, "id_accuracy")}
        for metric, title in SHOWN:
            for group in GROUPS:
                row[f"{group} {title}"] = _with_ci(by_set.loc[group], metric) if group in by_set.index else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def _with_ci(row: pd.Series, metric: str) -> str:
    value = row[metric]
    if value is None or not np.isfinite(value):
        return "–"
    text = f"{value:.2f}"
    low, high = row[f"{metric}_low"], row[f"{metric}_high"]
    if np.isfinite(low) and np.isfinite(high):
        text += f" [{low:.2f}, {high:.2f}]"
    return text


def ood_benchmarks(table: pd.DataFrame) -> list[str]:
    return sorted(set(table["benchmark"]))


def ood_markdown(table: pd.DataFrame, level: float, n_boot: int) -> list[str]:
    """Markdown lines of the section: one table per benchmark (none without OoD records)."""
    if table.empty:
        return []
    lines = ["", "## OoD detection", "", OOD_TEXT.format(level=f"{100 * level:g}", n_boot=n_boot)]
    for benchmark in ood_benchmarks(table):
        frame = ood_display(table, benchmark)
        frame = frame.map(lambda v: str(v).replace("|", "\\|"))
        lines += ["", f"### {benchmark}", "",
                  frame.to_markdown(index=False, disable_numparse=True,
                                    colalign=["left"] * 3 + ["right"] * (len(frame.columns) - 3))]
    return lines


def ood_page_tables(table: pd.DataFrame) -> list[dict]:
    """Per benchmark: {"benchmark", "columns", "rows"} of text cells (the page template escapes them)."""
    return [{"benchmark": b, "columns": list(frame.columns), "rows": frame.values.tolist()}
            for b in ood_benchmarks(table) for frame in [ood_display(table, b)]]


__all__ = ["OOD_COLUMNS", "OOD_TEXT", "empty_ood_table", "ood_display", "ood_markdown", "ood_page_tables",
           "ood_table"]
