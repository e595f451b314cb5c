"""Result records -> leaderboard tables: one cell per (backbone, task, protocol), averaged over seeds.

A cell gathers the records of every seed of one (backbone, task, protocol). When the same seed was recorded
twice (a re-run, or the same results in two folders), the newest record (latest `created_at`) is kept and the
older one is named in the notes, so the choice is visible and deterministic. The long table has one row per
cell with its bootstrap CI and provenance; the wide table is backbone x task, one block per protocol.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from unirep.errors import UnirepError
from unirep.fileio import sha256_json
from unirep.metrics import Metric
from unirep.results import ResultRecord
from unirep.universality import bootstrap_task_ci

# Only scores in percent take part in aggregates and CIs; other metrics (e.g. LogME evidence) are listed as-is.
PERCENT_METRICS = frozenset(m.value for m in Metric)
# Versions worth showing per row; the full set stays in the long CSV.
SHOWN_VERSIONS = ("unirep", "torch", "timm", "scikit-learn")
CellKey = tuple[str, str, str]  # (backbone, task, protocol)


@dataclass
class Cell:
    """The records of one (backbone, task, protocol), one per seed, sorted by seed."""

    backbone: str
    task: str
    protocol: str
    records: list[ResultRecord] = field(default_factory=list)

    @property
    def key(self) -> CellKey:
        return self.backbone, self.task, self.protocol

    @property
    def metric(self) -> str:
        return self.records[0].metric

    @property
    def is_percent(self) -> bool:
        return self.metric in PERCENT_METRICS

    @property
    def score(self) -> float:
        return float(np.mean([r.score for r in self.records]))

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.records]

    @property
    def secondary_scores(self) -> dict[str, float]:
        """Seed means of the other metrics a protocol reports next to its score (`extra["secondary_scores"]`,
        e.g. the detection protocol's mAP@.5); {} for protocols without."""
        names = {k for r in self.records for k in (r.extra.get("secondary_scores") or {})}
        values = {n: [r.extra.get("secondary_scores", {}).get(n) for r in self.records] for n in sorted(names)}
        return {n: float(np.mean(v)) for n, v in values.items() if all(x is not None for x in v)}

    @property
    def created_at(self) -> str:
        return max(r.created_at for r in self.records)

    @cached_property
    def config_digest(self) -> str:
        """Short digest of the run config(s); several seeds run with different configs list each."""
        return ";".join(sorted({config_digest(r.config) for r in self.records}))

    def examples(self, stack_seeds: bool | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """(test labels, predictions) for the bootstrap, or None when a seed lacks per-example outcomes.

        With `stack_seeds` (default: when the cell has several seeds) predictions get a seed axis at position 1,
        (n, seeds, ...), for `SeedMeanMetric`: resampling the same examples for every seed keeps the CI about
        the seed-mean score the leaderboard shows.
        """
        if not self.is_percent or any(r.test_labels is None or r.test_predictions is None for r in self.records):
            return None
        labels = np.asarray(self.records[0].test_labels)
        if any(not np.array_equal(np.asarray(r.test_labels), labels) for r in self.records[1:]):
            return None
        predictions = [np.asarray(r.test_predictions) for r in self.records]
        if any(len(p) != len(labels) or p.shape != predictions[0].shape for p in predictions):
            return None
        if stack_seeds is None:
            stack_seeds = len(predictions) > 1
        return labels, (np.stack(predictions, axis=1) if stack_seeds else predictions[0])

    def bootstrap_metric(self) -> Metric | SeedMeanMetric:
        metric = Metric(self.metric)
        return metric if len(self.records) == 1 else SeedMeanMetric(metric)


@dataclass(frozen=True)
class SeedMeanMetric:
    """A metric over predictions with a seed axis, (n, seeds, ...): the mean over seeds of the metric of each
    seed's predictions (labels or, for mAP, (n, C) scores)."""

    metric: Metric

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return float(np.mean([self.metric(y_true, y_pred[:, s]) for s in range(y_pred.shape[1])]))


def config_digest(config: dict) -> str:
    return sha256_json(config)[:12]


def choose_records(records: Iterable[ResultRecord]) -> tuple[list[ResultRecord], list[str]]:
    """One record per (backbone, task, protocol, seed): the newest; notes name each superseded one."""
    newest: dict[tuple, ResultRecord] = {}
    notes: list[str] = []
    # Sorting by content first makes the choice among identical timestamps independent of file order.
    for record in sorted(records, key=lambda r: (r.created_at, sha256_json(r.to_dict()))):
        key = (record.backbone, record.task, record.protocol, record.seed)
        if key in newest:
            notes.append(f"{'/'.join(map(str, key[:3]))} seed {key[3]}: kept the record of {record.created_at}, "
                         f"dropped the one of {newest[key].created_at}")
        newest[key] = record
    return [newest[k] for k in sorted(newest)], notes


def group_cells(records: Sequence[ResultRecord]) -> tuple[list[Cell], list[str]]:
    """Cells sorted by (protocol, task, backbone); a cell whose seeds disagree on metric or split is dropped."""
    chosen, notes = choose_records(records)
    grouped: dict[CellKey, Cell] = {}
    for record in chosen:
        key = (record.backbone, record.task, record.protocol)
        grouped.setdefault(key, Cell(*key)).records.append(record)
    cells = []
    for key in sorted(grouped, key=lambda k: (k[2], k[1], k[0])):
        cell = grouped[key]
        problem = _seed_disagreement(cell)
        if problem:
            notes.append(f"{'/'.join(key)}: left out, {problem}")
            continue
        cells.append(cell)
    notes.extend(_split_disagreements(cells))
    return cells, notes


def _seed_disagreement(cell: Cell) -> str | None:
    metrics = sorted({r.metric for r in cell.records})
    if len(metrics) > 1:
        return f"its seeds use different metrics {metrics}"
    digests = sorted({str(r.split_manifest.get("digest")) for r in cell.records})
    if len(digests) > 1:
        return f"its seeds use different split manifests {digests}"
    return None


def _split_disagreements(cells: Sequence[Cell]) -> list[str]:
    """Scores on one task are comparable only on one split: name tasks whose records disagree."""
    by_task: dict[str, set[str]] = defaultdict(set)
    for cell in cells:
        by_task[cell.task].add(str(cell.records[0].split_manifest.get("digest")))
    return [f"task {task}: records use {len(d)} different split manifests ({', '.join(sorted(d))}); its scores are "
            "not comparable across backbones" for task, d in sorted(by_task.items()) if len(d) > 1]


def task_interval(cell: Cell, n_boot: int, level: float, seed: int) -> tuple[float, float]:
    """Bootstrap CI of a cell's score over its test examples; NaNs when the records hold no predictions."""
    examples = cell.examples()
    if examples is None or n_boot == 0:
        return np.nan, np.nan
    try:
        ci = bootstrap_task_ci(*examples, cell.bootstrap_metric(), n_boot=n_boot, seed=seed, level=level)
    except UnirepError:
        return np.nan, np.nan
    return ci.low, ci.high


def long_table(cells: Sequence[Cell], n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per (backbone, task, protocol): seed-mean score, its CI, selection and provenance."""
    rows = []
    for cell in cells:
        first = cell.records[0]
        low, high = task_interval(cell, n_boot, level, seed)
        scores = [r.score for r in cell.records]
        val_scores = [r.val_score for r in cell.records if r.val_score is not None]
        rows.append({
            "backbone": cell.backbone,
            "task": cell.task,
            "protocol": cell.protocol,
            "metric": cell.metric,
            "score": cell.score,
            "score_std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
            "ci_low": low,
            "ci_high": high,
            "n_seeds": len(scores),
            "seeds": ";".join(map(str, cell.seeds)),
            "val_score": float(np.mean(val_scores)) if val_scores else np.nan,
            # One dict for one seed, else a list in seed order: what was selected on val, per seed.
            "hyperparameters": _json(first.hyperparameters if len(cell.records) == 1
                                     else [r.hyperparameters for r in cell.records]),
            "n_train": first.n_train,
            "n_val": first.n_val,
            "n_test": first.n_test,
            "split_digest": first.split_manifest.get("digest", ""),
            "weights_id": first.backbone_identity.get("weights_id", ""),
            "config_digest": cell.config_digest,
            "versions": _json(first.versions),
            "created_at": cell.created_at,
            "secondary_scores": _json(cell.secondary_scores),
        })
    columns = ["backbone", "task", "protocol", "metric", "score", "score_std", "ci_low", "ci_high", "n_seeds",
               "seeds", "val_score", "hyperparameters", "n_train", "n_val", "n_test", "split_digest", "weights_id",
               "config_digest", "versions", "created_at", "secondary_scores"]
    return pd.DataFrame(rows, columns=columns)


def wide_table(long: pd.DataFrame) -> pd.DataFrame:
    """Backbone x task scores, one block of rows per protocol: columns protocol, backbone, then tasks (sorted)."""
    if long.empty:
        return pd.DataFrame(columns=["protocol", "backbone"])
    wide = long.pivot(index=["protocol", "backbone"], columns="task", values="score")
    wide = wide.reindex(columns=sorted(wide.columns)).sort_index()
    wide.columns.name = None
    return wide.reset_index()


def shown_versions(records: Sequence[ResultRecord]) -> str:
    """'unirep 0.1.0 · torch 2.15.0 ...' of the records; a package whose versions differ lists each."""
    parts = []
    for package in SHOWN_VERSIONS:
        values = sorted({r.versions[package] for r in records if package in r.versions})
        if values:
            parts.append(f"{package} {'/'.join(values)}")
    return " · ".join(parts)


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
