"""Bootstrap confidence intervals for task scores, score differences and universality aggregates.

All intervals are percentile intervals: resample the test examples with replacement n_boot times, recompute
the statistic, and take the (1 - level)/2 and (1 + level)/2 quantiles (numpy's default linear interpolation).
Resamples are (n_boot x n) index matrices applied to every method at once, so comparisons are paired: two
methods are always scored on the same resampled test set, and identical predictions give a [0, 0] difference.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from unirep.errors import ConfigError, DataError, UnknownNameError
from unirep.metrics import Metric
from unirep.universality.aggregates import prepare_table
from unirep.universality.batched_metrics import BATCHED_METRICS, BatchedMetric

PointMetric = Callable[[np.ndarray, np.ndarray], float]
MetricLike = Metric | str | PointMetric
Examples = tuple[Sequence, Sequence]

# Indices per chunk (16 MiB of int32): memory stays bounded whatever the test-set size.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class ConfidenceInterval:
    """A point estimate with its bootstrap percentile interval [low, high] at `level`; `n_invalid` resamples
    had an undefined score (e.g. mAP with no positive drawn) and are left out of the quantiles."""

    estimate: float
    low: float
    high: float
    level: float
    n_boot: int
    n_invalid: int = 0

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def width(self) -> float:
        return self.high - self.low

    def to_dict(self) -> dict:
        return asdict(self)


def iter_bootstrap_indices(
    n: int, n_boot: int, seed: int | np.random.SeedSequence = 0
) -> Iterator[np.ndarray]:
    """Resample indices in row chunks: each row is n draws with replacement from range(n). Deterministic in
    (n, n_boot, seed)."""
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // n)
    dtype = np.int32 if n < 2**31 else np.int64
    for start in range(0, n_boot, rows):
        yield rng.integers(0, n, size=(min(rows, n_boot - start), n), dtype=dtype)


def task_resample_seed(seed: int, task: str) -> np.random.SeedSequence:
    """Seed of one task's resamples: fixed by (seed, task name), so adding or reordering tasks changes nothing."""
    return np.random.SeedSequence([seed, zlib.crc32(task.encode("utf-8"))])


# --------------------------------------------------------------------------------------------------- metrics


def _looped(metric: PointMetric) -> BatchedMetric:
    """Any other metric (e.g. a custom callable), one resample at a time: correct, slower."""

    def batched(labels: np.ndarray, predictions: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.array([metric(labels[row], predictions[row]) for row in index], dtype=float)

    return batched


def resolve_metric(metric: MetricLike) -> tuple[PointMetric, BatchedMetric]:
    """The point metric and its batched form for a Metric, a metric name ("top1") or a callable(y_true, y_pred)."""
    if isinstance(metric, str):  # Metric is a str Enum, so this covers both
        try:
            metric = Metric(metric)
        except ValueError:
            raise UnknownNameError(f"unknown metric {metric!r}: choose one of "
                                   f"{', '.join(m.value for m in Metric)} or pass a callable") from None
        return metric, BATCHED_METRICS.get(metric) or _looped(metric)
    if callable(metric):
        return metric, _looped(metric)
    raise ConfigError(f"metric must be a Metric, a metric name or a callable(y_true, y_pred), got {metric!r}")


# ------------------------------------------------------------------------------------------------- intervals


def _check_settings(n_boot: int, level: float) -> None:
    if not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ConfigError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must be strictly between 0 and 1 (e.g. 0.95), got {level!r}")


def _examples(labels: Sequence, predictions: Sequence, where: str) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(labels), np.asarray(predictions)
    # Rows are test examples: (N,) class labels, or (N, C) multi-label targets scored by mAP.
    if y.ndim not in (1, 2) or len(y) == 0:
        raise DataError(f"{where}: labels must be a non-empty (N,) or (N, C) array, got shape {y.shape}")
    if len(p) != len(y):
        raise DataError(f"{where}: {len(y)} labels but {len(p)} predictions: they must be per test example")
    return y, p


def _bounds(samples: np.ndarray, level: float, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    alpha = 1.0 - level
    low, high = np.nanquantile(samples, [alpha / 2, 1 - alpha / 2], axis=axis)
    return low, high


def _n_invalid(samples: np.ndarray) -> int:
    return int((~np.isfinite(samples)).sum())


def _resampled(batched: BatchedMetric, labels: np.ndarray, predictions: Sequence[np.ndarray], n_boot: int,
               seed: int | np.random.SeedSequence) -> np.ndarray:
    """(n_boot, len(predictions)) scores, every prediction set scored on the same resamples."""
    out = np.empty((n_boot, len(predictions)))
    row = 0
    for index in iter_bootstrap_indices(len(labels), n_boot, seed):
        for j, p in enumerate(predictions):
            out[row : row + len(index), j] = batched(labels, p, index)
        row += len(index)
    return out


def bootstrap_task_ci(
    labels: Sequence, predictions: Sequence, metric: MetricLike, n_boot: int = 1000, seed: int = 0,
    level: float = 0.95,
) -> ConfidenceInterval:
    """Percentile bootstrap CI of a task score from per-example test labels and predictions.

    Example:
        >>> ci = bootstrap_task_ci([0, 1, 1, 0] * 50, [0, 1, 0, 0] * 50, "top1", n_boot=200)
        >>> ci.estimate, ci.contains(75.0)
        (75.0, True)
    """
    _check_settings(n_boot, level)
    point, batched = resolve_metric(metric)
    y, p = _examples(labels, predictions, "bootstrap_task_ci")
    samples = _resampled(batched, y, [p], n_boot, seed)[:, 0]
    low, high = _bounds(samples, level)
    return ConfidenceInterval(float(point(y, p)), float(low), float(high), level, n_boot, _n_invalid(samples))


def paired_difference_ci(
    labels: Sequence, predictions_a: Sequence, predictions_b: Sequence, metric: MetricLike, n_boot: int = 1000,
    seed: int = 0, level: float = 0.95,
) -> ConfidenceInterval:
    """Percentile CI of score_a - score_b, both scored on the same resamples (a paired bootstrap).

    An interval excluding 0 says the difference is unlikely to be resampling noise of this test set.
    """
    _check_settings(n_boot, level)
    point, batched = resolve_metric(metric)
    y, a = _examples(labels, predictions_a, "paired_difference_ci (a)")
    _, b = _examples(labels, predictions_b, "paired_difference_ci (b)")
    samples = _resampled(batched, y, [a, b], n_boot, seed)
    differences = samples[:, 0] - samples[:, 1]
    low, high = _bounds(differences, level)
    return ConfidenceInterval(float(point(y, a) - point(y, b)), float(low), float(high), level, n_boot,
                              _n_invalid(differences))


def _layout(per_task_examples: Mapping[str, Mapping[str, Examples]]) -> tuple[list[str], list[str]]:
    methods = list(per_task_examples)
    if not methods:
        raise DataError("bootstrap_aggregate_ci: no methods given")
    tasks = list(dict.fromkeys(t for m in methods for t in per_task_examples[m]))
    holes = [f"({m}, {t})" for m in methods for t in tasks if t not in per_task_examples[m]]
    if holes:
        raise DataError(f"bootstrap_aggregate_ci: no test predictions for {', '.join(holes)}: the paired bootstrap "
                        "needs every method on every task")
    return methods, tasks


def _shared_labels(per_task_examples: Mapping[str, Mapping[str, Examples]], methods: list[str],
                   task: str) -> tuple[np.ndarray, list[np.ndarray]]:
    first = methods[0]
    labels, _ = _examples(*per_task_examples[first][task], f"{first}/{task}")
    predictions = []
    for method in methods:
        y, p = _examples(*per_task_examples[method][task], f"{method}/{task}")
        if not np.array_equal(y, labels):
            raise DataError(f"task {task!r}: the test labels of {method!r} differ from those of {first!r}: paired "
                            "resampling needs the same test examples in the same order (the task's split manifest)")
        predictions.append(p)
    return labels, predictions


def _metric_for(metric_by_task: Mapping[str, MetricLike] | MetricLike, task: str) -> MetricLike:
    if isinstance(metric_by_task, Mapping):
        if task not in metric_by_task:
            raise ConfigError(f"metric_by_task has no metric for task {task!r}: give one per task")
        return metric_by_task[task]
    return metric_by_task


def bootstrap_aggregate_ci(
    per_task_examples: Mapping[str, Mapping[str, Examples]],
    metric_by_task: Mapping[str, MetricLike] | MetricLike,
    aggregate: str | Sequence[str],
    reference: str | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    s_max: float | Mapping[str, float] = 100.0,
    decathlon_emax: str = "reference",
    baseline: str | None = None,
) -> pd.DataFrame:
    """Percentile bootstrap CIs of universality aggregates, resampling each task's test examples.

    Each task gets its own resamples (seeded by `task_resample_seed(seed, task)`), shared by every method, so
    the reference and the others move together; each of the n_boot resampled score tables is aggregated.

    Args:
        per_task_examples: {method: {task: (test_labels, test_predictions)}}; every method on every task, with
            identical labels per task.
        metric_by_task: {task: metric} or one metric for all (Metric, name, or callable(y_true, y_pred)).
        aggregate: an aggregate name or several (see `AGGREGATES`; "decathlon" as in `compute_aggregates`).
        reference, s_max, decathlon_emax, baseline: as in `compute_aggregates`.

    Returns:
        rows = methods; for each aggregate NAME the columns NAME (point estimate on the full test sets),
        NAME_low and NAME_high. `attrs` adds level, n_boot, seed, the point score table ("scores",
        {method: {task: score}}) and "invalid_resamples" {NAME: count of resamples where the aggregate was
        undefined, e.g. the reference scoring s_max on a resample; they are left out of the quantiles}.
    """
    _check_settings(n_boot, level)
    methods, tasks = _layout(per_task_examples)
    point = np.empty((len(methods), len(tasks)))
    samples = np.empty((n_boot, len(methods), len(tasks)))
    for t, task in enumerate(tasks):
        point_metric, batched = resolve_metric(_metric_for(metric_by_task, task))
        labels, predictions = _shared_labels(per_task_examples, methods, task)
        point[:, t] = [point_metric(labels, p) for p in predictions]
        samples[:, :, t] = _resampled(batched, labels, predictions, n_boot, task_resample_seed(seed, task))
    table = pd.DataFrame(point, index=methods, columns=tasks)
    names = [aggregate] if isinstance(aggregate, str) else list(aggregate)
    prepared = prepare_table(table, reference, names, s_max, decathlon_emax, baseline)
    columns: dict[str, np.ndarray] = {}
    invalid: dict[str, int] = {}
    for agg in prepared.aggregates:
        with np.errstate(divide="ignore", invalid="ignore"):
            boot = agg(samples, prepared.context)
        bad = ~np.isfinite(boot)
        invalid[agg.name] = int(bad.any(axis=1).sum())
        columns[agg.name] = agg(point, prepared.context)
        columns[f"{agg.name}_low"], columns[f"{agg.name}_high"] = _bounds(np.where(bad, np.nan, boot), level)
    result = pd.DataFrame(columns, index=pd.Index(methods, name="method"))
    result.attrs.update(prepared.attrs())
    result.attrs.update({"level": level, "n_boot": n_boot, "seed": seed, "invalid_resamples": invalid,
                         "scores": table.to_dict(orient="index")})
    return result
