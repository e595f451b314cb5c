"""Universality per block: one block per (suite, protocol), aggregated with `unirep.universality`.

A block's aggregates rank only the backbones that completed every task of the block: mean, mNRG, Borda...
over different task sets would not be comparable, and dropping a task for everyone because one submission
skipped it would let a partial submission change everyone's numbers. Backbones with missing tasks are listed
with their count of tasks done and no rank. CIs come from the paired bootstrap over the test examples
(`bootstrap_aggregate_ci`) when every ranked backbone's records hold per-example test predictions.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from unirep.errors import DataError, UnirepError
from unirep.leaderboard.tables import Cell, SeedMeanMetric
from unirep.metrics import Metric
from unirep.tasks.base import CARDS_DIR, load_card
from unirep.universality import bootstrap_aggregate_ci, compute_aggregates

ALL_TASKS = "all"


@dataclass
class Block:
    """Aggregates of one (suite, protocol).

    Attributes:
        tasks: the block's tasks (sorted); `done` counts the tasks each backbone completed.
        aggregates: rows = ranked backbones (complete on every percent task); for each aggregate NAME the
            columns NAME, NAME_low, NAME_high (NaN when no CI could be computed).
        attrs: `compute_aggregates` attrs (reference, definitions, higher_is_better...) plus level and n_boot.
        headline: the aggregate that ranks the block (mNRG when a reference is given, else the mean).
        notes: why aggregates or CIs are missing, in words.
    """

    suite: str
    protocol: str
    tasks: list[str]
    done: dict[str, int]
    aggregates: pd.DataFrame = field(default_factory=pd.DataFrame)
    attrs: dict = field(default_factory=dict)
    headline: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """Aggregate names in column order."""
        return [c for c in self.aggregates.columns if not c.endswith(("_low", "_high"))]

    def ranks(self) -> pd.Series:
        """Rank of each ranked backbone by the headline aggregate (1 = best; ties share the best rank)."""
        if self.headline is None:
            return pd.Series(dtype=float)
        higher = self.attrs["higher_is_better"][self.headline]
        return self.aggregates[self.headline].rank(ascending=not higher, method="min")


def task_suites(tasks: Sequence[str], cards_dir: Path = CARDS_DIR) -> dict[str, tuple[str, ...]]:
    """The suites of each task from its card under tasks/; a task without a card (custom) is in no suite."""
    suites = {}
    for task in tasks:
        try:
            suites[task] = tuple(load_card(task, cards_dir).suites)
        except (DataError, OSError):
            suites[task] = ()
    return suites


def block_tasks(tasks: Sequence[str], suites: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """{suite: tasks}: "all" first, then each named suite that is a proper, non-empty part of the tasks."""
    tasks = sorted(tasks)
    out = {ALL_TASKS: tasks}
    for suite in sorted({s for t in tasks for s in suites.get(t, ())}):
        members = [t for t in tasks if suite in suites.get(t, ())]
        if members and len(members) < len(tasks) and suite != ALL_TASKS:
            out[suite] = members
    return out


def protocol_order(cells: Sequence[Cell]) -> list[str]:
    """Protocols scored in percent (probes, fine-tuning) first, then estimators; by name within each."""
    percent = {c.protocol: c.is_percent for c in cells}
    return sorted(percent, key=lambda protocol: (not percent[protocol], protocol))


def build_blocks(
    cells: Sequence[Cell],
    suites: Mapping[str, Sequence[str]],
    reference: str | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> list[Block]:
    """Blocks by protocol (in `protocol_order`), "all" tasks first."""
    blocks = []
    order = protocol_order(cells)
    for protocol in order:
        in_protocol = [c for c in cells if c.protocol == protocol]
        for suite, tasks in block_tasks({c.task for c in in_protocol}, suites).items():
            chosen = [c for c in in_protocol if c.task in tasks]
            block = Block(suite, protocol, tasks, done=_count_done(chosen))
            _aggregate(block, chosen, reference, n_boot, level, seed)
            blocks.append(block)
    blocks.sort(key=lambda b: (b.suite != ALL_TASKS, b.suite, order.index(b.protocol)))
    return blocks


def _count_done(cells: Sequence[Cell]) -> dict[str, int]:
    done: dict[str, int] = {}
    for cell in cells:
        done[cell.backbone] = done.get(cell.backbone, 0) + 1
    return dict(sorted(done.items()))


def _aggregate(block: Block, cells: Sequence[Cell], reference: str | None, n_boot: int, level: float,
               seed: int) -> None:
    percent = [c for c in cells if c.is_percent]
    if not percent:
        block.notes.append(f"metric {cells[0].metric!r} is not a percentage: no universality aggregates")
        return
    tasks = [t for t in block.tasks if t in {c.task for c in percent}]
    if len(tasks) < len(block.tasks):
        left_out = sorted(set(block.tasks) - set(tasks))
        block.notes.append(f"task(s) {', '.join(left_out)} have no percentage scores: left out of the aggregates")
    scores = pd.DataFrame([(c.backbone, c.task, c.score) for c in percent], columns=["backbone", "task", "score"])
    table = scores.pivot(index="backbone", columns="task", values="score").reindex(columns=tasks)
    complete = table.dropna()
    if complete.empty:
        block.notes.append("no backbone completed every task of this block: nothing is ranked")
        return
    ref = reference if reference in complete.index else None
    if reference is not None and ref is None:
        block.notes.append(f"reference {reference!r} did not complete every task here: no mNRG/aNRG/Decathlon")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            point = compute_aggregates(complete, reference=ref)
    except UnirepError as exc:
        block.notes.append(f"no aggregates: {exc}")
        return
    block.notes.extend(str(w.message) for w in caught)
    block.attrs = {**point.attrs, "level": level, "n_boot": n_boot}
    block.headline = "mnrg" if "mnrg" in point.columns else "mean"
    lows_highs = _intervals(block, percent, tasks, list(complete.index), list(point.columns), ref, n_boot, level,
                            seed)
    block.aggregates = pd.concat([point, lows_highs], axis=1)[
        [c for name in point.columns for c in (name, f"{name}_low", f"{name}_high")]]


def _intervals(block: Block, cells: Sequence[Cell], tasks: list[str], ranked: list[str], names: list[str],
               reference: str | None, n_boot: int, level: float, seed: int) -> pd.DataFrame:
    empty = pd.DataFrame(np.nan, index=pd.Index(ranked), columns=[f"{n}_{s}" for n in names for s in ("low", "high")])
    if n_boot == 0:
        return empty
    by_key = {(c.backbone, c.task): c for c in cells}
    examples: dict[str, dict[str, tuple]] = {b: {} for b in ranked}
    metrics: dict[str, Metric | SeedMeanMetric] = {}
    for task in tasks:
        task_cells = [by_key[(b, task)] for b in ranked]
        if len({c.metric for c in task_cells}) > 1:
            block.notes.append(f"task {task}: records use different metrics; no CIs")
            return empty
        # The batched metric is much faster; the seed-mean wrapper is only needed when a backbone has seeds,
        # and then every backbone's predictions get the seed axis (one seed included).
        several = any(len(c.records) > 1 for c in task_cells)
        for cell in task_cells:
            found = cell.examples(stack_seeds=several)
            if found is None:
                block.notes.append(f"no CIs: {cell.backbone}/{task}/{cell.protocol} has no per-example test "
                                   "predictions")
                return empty
            examples[cell.backbone][task] = found
        metric = Metric(task_cells[0].metric)
        metrics[task] = SeedMeanMetric(metric) if several else metric
    try:
        ci = bootstrap_aggregate_ci(examples, metrics, names, reference=reference, n_boot=n_boot, seed=seed,
                                    level=level)
    except UnirepError as exc:
        block.notes.append(f"no CIs: {exc}")
        return empty
    return ci[list(empty.columns)].set_axis(ranked, axis=0)


def aggregates_table(blocks: Sequence[Block]) -> pd.DataFrame:
    """Long-ish CSV view: one row per (suite, protocol, backbone) with rank, tasks done and every aggregate."""
    frames = []
    for block in blocks:
        frame = pd.DataFrame({"backbone": list(block.done), "tasks_done": list(block.done.values())})
        frame.insert(0, "protocol", block.protocol)
        frame.insert(0, "suite", block.suite)
        frame["n_tasks"] = len(block.tasks)
        frame["rank"] = frame["backbone"].map(block.ranks())
        if not block.aggregates.empty:
            frame = frame.join(block.aggregates, on="backbone")
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["suite", "protocol", "backbone", "tasks_done", "n_tasks", "rank"])
    return pd.concat(frames, ignore_index=True)
