"""Backbones trained with several seeds, one row each: mean ± Student-t interval over the training seeds.

A label `<name>@seed<k>` (e.g. `source:reference@seed1`, written by the source comparison) is training seed k of
`<name>`. The leaderboard's other tables keep one row per label with CIs over test examples, which cannot show what
another training run would give. This table groups the labels that differ only by that suffix and reports, per
protocol, each task's score and two aggregates per seed: the mean over tasks and mNRG (median over tasks of
(s - s_ref) / (100 - s_ref), x100) against the reference, paired seed by seed when the reference is itself one seed
of a group (seed k of every group against seed k of the reference's group). Each is given as the mean over seeds and
the half-width of its `level` t-interval (t_{n-1} x sd / sqrt(n), as `unirep.fewshot.mean_ci`; NaN for one seed).

Backbones trained here (source checkpoints) that have a single seed get a note instead: their CIs are over test
examples only.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from unirep.leaderboard.tables import Cell

SEED_LABEL = re.compile(r"^(?P<base>.+)@seed(?P<seed>\d+)$")
SEED_COLUMNS = ["protocol", "backbone", "quantity", "n_seeds", "seeds", "mean", "half_width", "low", "high",
                "values"]
AGGREGATE_QUANTITIES = ("mean", "mnrg")  # rows after the per-task rows of each group
TRAINED_HERE = "SourceCheckpointBackbone"  # backbone_identity class of the networks unirep trains itself
S_MAX = 100.0


def split_seed_label(label: str) -> tuple[str, int | None]:
    """(`<name>`, k) for `<name>@seed<k>`, else (label, None)."""
    match = SEED_LABEL.match(label)
    return (label, None) if match is None else (match["base"], int(match["seed"]))


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t interval of the mean (NaN half-width below two values)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(half)


def seed_table(cells: Sequence[Cell], reference: str | None = None,
               level: float = 0.95) -> tuple[pd.DataFrame, list[str]]:
    """One row per (protocol, seed group, task or aggregate) — columns SEED_COLUMNS — and notes on what was left out.

    Aggregates of a protocol use the tasks every seed of every group (and of the paired reference) completed, so
    groups are compared on the same tasks; mNRG leaves out tasks where the reference scores 100 (NRG undefined)."""
    scores = {c.key: c.score for c in cells}
    percent = {(c.task, c.protocol) for c in cells if c.is_percent}
    by_group: dict[tuple[str, str], dict[int, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for cell in cells:
        base, seed = split_seed_label(cell.backbone)
        if seed is not None:
            by_group[(cell.protocol, base)][seed][cell.task] = cell.score
    rows, notes = [], []
    ref_base, ref_seed = split_seed_label(reference) if reference else (None, None)
    for protocol in sorted({p for p, _ in by_group}):
        groups = {base: per_seed for (p, base), per_seed in by_group.items() if p == protocol}
        complete = [set(tasks) for per_seed in groups.values() for tasks in per_seed.values()]
        common = sorted(t for t in set.intersection(*complete) if (t, protocol) in percent)
        left_out = sorted({t for t in set.union(*complete) if (t, protocol) in percent} - set(common))
        if left_out:  # aggregates compare groups on the same tasks only
            notes.append(f"{protocol}: mean and mNRG are over {len(common)} task(s) "
                         f"({', '.join(common) or 'none'}); {', '.join(left_out)} lack some seed of some group")
        for base in sorted(groups):
            per_seed = groups[base]
            seeds = sorted(per_seed)
            for task in sorted({t for tasks in per_seed.values() for t in tasks}):
                have = [s for s in seeds if task in per_seed[s]]
                rows.append(_row(protocol, base, task, have, [per_seed[s][task] for s in have], level))
            if not common:
                continue
            rows.append(_row(protocol, base, "mean", seeds,
                             [float(np.mean([per_seed[s][t] for t in common])) for s in seeds], level))
            if reference is None or base == ref_base:
                continue
            paired = {s: f"{ref_base}@seed{s}" if ref_seed is not None else reference for s in seeds}
            usable = [s for s in seeds if all((paired[s], t, protocol) in scores for t in common)]
            if usable != seeds:
                notes.append(f"{protocol} / {base}: no mNRG for seed(s) {sorted(set(seeds) - set(usable))}: the "
                             f"reference {', '.join(sorted({paired[s] for s in set(seeds) - set(usable)}))} "
                             "lacks some of its tasks")
            values, dropped = {}, set()
            for s in usable:
                ref = {t: scores[(paired[s], t, protocol)] for t in common}
                kept = [t for t in common if ref[t] < S_MAX]
                dropped |= set(common) - set(kept)
                if kept:
                    values[s] = 100 * float(np.median([(per_seed[s][t] - ref[t]) / (S_MAX - ref[t]) for t in kept]))
            if dropped:
                notes.append(f"{protocol} / {base}: mNRG leaves out {', '.join(sorted(dropped))} for the seed(s) "
                             "where the reference scores 100 there (NRG undefined)")
            if values:
                rows.append(_row(protocol, base, "mnrg", list(values), list(values.values()), level))
    return pd.DataFrame(rows, columns=SEED_COLUMNS), notes


def _row(protocol: str, base: str, quantity: str, seeds: Sequence[int], values: Sequence[float],
         level: float) -> dict:
    mean, half = t_interval(values, level)
    return {"protocol": protocol, "backbone": base, "quantity": quantity, "n_seeds": len(values),
            "seeds": " ".join(map(str, seeds)), "mean": mean, "half_width": half, "low": mean - half,
            "high": mean + half, "values": " ".join(f"{v:.4f}" for v in values)}


def single_seed_backbones(cells: Sequence[Cell]) -> list[str]:
    """Backbones unirep trained itself (source checkpoints) that have one training seed: a plain label, or a
    `<name>@seed<k>` group of one."""
    trained = {c.backbone for c in cells if any(r.backbone_identity.get("class") == TRAINED_HERE for r in c.records)}
    group_sizes: dict[str, set[int]] = defaultdict(set)
    for label in trained:
        base, seed = split_seed_label(label)
        group_sizes[base].add(-1 if seed is None else seed)
    return sorted(label for label in trained if len(group_sizes[split_seed_label(label)[0]]) == 1)


def single_seed_note(backbones: Sequence[str]) -> str | None:
    if not backbones:
        return None
    return (f"{', '.join(backbones)}: one training seed each, so their CIs cover test-example noise only; training "
            "another seed moves such networks' scores too, so differences between them are not settled by this "
            "table. Train several seeds with `seeds: [0, 1, 2]` in the source comparison (as "
            "configs/sources/compare.yaml does) to get mean ± t-interval rows.")


def seed_display(table: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Display view of one protocol: rows = seed groups, best mean first; columns seeds, mean, mNRG, then one per
    task, each cell "mean ± half-width" (2 decimals; "–" where missing, no ± for one seed)."""
    part = table[table["protocol"] == protocol]
    quantities = [q for q in AGGREGATE_QUANTITIES if q in set(part["quantity"])]
    tasks = sorted(set(part["quantity"]) - set(AGGREGATE_QUANTITIES))
    means = part[part["quantity"] == "mean"].set_index("backbone")["mean"]
    order = sorted(set(part["backbone"]), key=lambda b: (-means.get(b, -np.inf), b))  # best mean first
    rows = []
    for base in order:
        group = part[part["backbone"] == base]
        by_quantity = {row.quantity: row for row in group.itertuples()}
        row = {"backbone": base, "seeds": str(max(r.n_seeds for r in by_quantity.values()))}
        for quantity in [*quantities, *tasks]:
            found = by_quantity.get(quantity)
            row["mNRG" if quantity == "mnrg" else quantity] = "–" if found is None else _plus_minus(found)
        rows.append(row)
    return pd.DataFrame(rows)


def _plus_minus(row) -> str:
    return f"{row.mean:.2f}" if not np.isfinite(row.half_width) else f"{row.mean:.2f} ± {row.half_width:.2f}"
