"""Universality aggregates: one number per method from a methods x tasks table of scores in percent.

Every aggregate is a pure function over a score array of shape (..., M, T) (M methods, T tasks, any leading
batch axes) returning (..., M). The batch axes let the bootstrap evaluate 1000 resampled tables in one call;
`compute_aggregates` is the DataFrame entry point. Definitions (shared/PROTOCOLS.md), s = a method's score on
a task, s_ref = the reference method's score, s_max = the task's perfect score (100 by default):

- mean: plain mean of the task scores (the VTAB score).
- mean_rank: mean over tasks of the method's rank among the M methods (1 = best; ties share their average rank).
- mnrg / anrg: NRG_t = (s - s_ref) / (s_max - s_ref); mNRG = 100 x median over tasks (ordinary median: the mean
  of the two middle values for an even count), aNRG = 100 x mean. The reference scores 0.
- borda: sum over tasks of M - rank + 1 points (average rank for ties, so the points of a task always sum to
  M(M+1)/2 and a method ranges from T to T*M).
- zscore: per task, (s - mean over methods) / population std over methods (ddof=0); a task where every method
  scores the same contributes 0; then the mean over tasks.
- decathlon_reference / decathlon_double_baseline: Visual Decathlon score sum_t alpha_t max(0, E_max - E)^gamma,
  gamma = 2, E = s_max - s (the error), alpha_t = 1000 / E_max^gamma, so a perfect task is worth 1000 points.
  E_max is the reference's error (TPAMI'19 transfer convention: the reference scores 0) or twice the baseline's
  error (Rebuffi et al. 2017; the baseline defaults to the reference).
- relative_gain: 100 x mean over tasks of (s - s_ref) / s_ref, the mean relative gain in percent of the
  reference's own score (arithmetic mean of per-task ratios; the reference scores 0).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from unirep.errors import ConfigError, DataError, UnknownNameError
from unirep.registry import Registry

DECATHLON_CONVENTIONS = ("reference", "double_baseline")
MISSING_POLICIES = ("error", "drop_tasks")
# Column order of the default report: PROTOCOLS.md asks for mean, mean rank, mNRG, Borda, z-score side by side.
DEFAULT_ORDER = (
    "mean", "mean_rank", "mnrg", "anrg", "borda", "zscore",
    "decathlon_reference", "decathlon_double_baseline", "relative_gain",
)
_MAX_LISTED_CELLS = 12


@dataclass(frozen=True)
class AggregateContext:
    """What an aggregate may use besides the scores.

    Attributes:
        methods, tasks: the row and column names of the score array (for error messages).
        s_max: per-task perfect score, shape (T,).
        reference, baseline: row positions of the reference and Decathlon baseline methods, if any.
    """

    methods: tuple[str, ...]
    tasks: tuple[str, ...]
    s_max: np.ndarray
    reference: int | None = None
    baseline: int | None = None


AggregateFn = Callable[[np.ndarray, AggregateContext], np.ndarray]
CheckFn = Callable[[np.ndarray, AggregateContext], None]


@dataclass(frozen=True)
class Aggregate:
    """A registered aggregate: `fn(scores (..., M, T), ctx) -> (..., M)` plus what it needs and means."""

    name: str
    fn: AggregateFn
    higher_is_better: bool
    needs: tuple[str, ...]
    definition: str
    check: CheckFn | None = None

    def __call__(self, scores: np.ndarray, ctx: AggregateContext) -> np.ndarray:
        return self.fn(scores, ctx)


AGGREGATES: Registry[Aggregate] = Registry("aggregate")


def register_aggregate(
    name: str, *, higher_is_better: bool = True, needs: tuple[str, ...] = (), check: CheckFn | None = None
) -> Callable[[AggregateFn], AggregateFn]:
    """Decorator registering an aggregate; its docstring's first paragraph becomes its definition.

    `needs` may hold "reference" and/or "baseline"; `check` validates the point-estimate table (the bootstrap
    skips it and counts non-finite resamples instead).
    """

    def decorator(fn: AggregateFn) -> AggregateFn:
        definition = " ".join((fn.__doc__ or "").split("\n\n")[0].split())
        AGGREGATES.add(name, Aggregate(name, fn, higher_is_better, needs, definition, check))
        return fn

    return decorator


# ---------------------------------------------------------------------------------------------------- checks


def _require_positive(values: np.ndarray, ctx: AggregateContext, row: int, problem: str, fix: str) -> None:
    bad = [task for task, value in zip(ctx.tasks, values, strict=True) if not value > 0]
    if bad:
        raise DataError(f"{problem} on task(s) {', '.join(bad)} for method {ctx.methods[row]!r}: {fix}")


def _check_reference_below_max(scores: np.ndarray, ctx: AggregateContext) -> None:
    ref = ctx.reference
    _require_positive(ctx.s_max - scores[ref], ctx, ref, "the reference already scores s_max (NRG and the "
                      "Decathlon E_max are undefined)", "drop those tasks or choose another reference")


def _check_reference_positive(scores: np.ndarray, ctx: AggregateContext) -> None:
    ref = ctx.reference
    _require_positive(scores[ref], ctx, ref, "the reference scores 0 (relative gain divides by it)",
                      "choose another reference or use mnrg")


def _check_baseline_below_max(scores: np.ndarray, ctx: AggregateContext) -> None:
    base = ctx.baseline
    _require_positive(ctx.s_max - scores[base], ctx, base, "the Decathlon baseline has zero error (E_max = 0)",
                      "choose another baseline")


# ------------------------------------------------------------------------------------------------ aggregates


def _row(scores: np.ndarray, index: int | None) -> np.ndarray:
    """Scores of one method kept as a (..., 1, T) slice so it broadcasts against every method."""
    return scores[..., index : index + 1, :]


def task_ranks(scores: np.ndarray) -> np.ndarray:
    """Rank of each method on each task, (..., M, T): 1 = best; tied methods share the average of their ranks."""
    return rankdata(-scores, method="average", axis=-2)


def task_nrg(scores: np.ndarray, ctx: AggregateContext) -> np.ndarray:
    """Per-task normalised relative gain (s - s_ref) / (s_max - s_ref), (..., M, T)."""
    ref = _row(scores, ctx.reference)
    return (scores - ref) / (ctx.s_max - ref)


@register_aggregate("mean")
def mean_score(scores: np.ndarray, ctx: AggregateContext) -> np.ndarray:
    """Plain mean of the task scores, in percent (the VTAB score)."""
    return scores.mean(axis=-1)


@register_aggregate("mean_rank", higher_is_better=False)
def mean_rank(scores: np.ndarray, ctx: AggregateContext) -> np.ndarray:
    """Mean over tasks of the method's rank (1 = best; tied methods share the average of their ranks)."""
    return task_ranks(scores).mean(axis=-1)


@register_aggregate("mnrg", needs=("reference",), check=_check_reference_below_max)
def mnrg(scores: np.ndarray, ctx: AggregateContext) -> np.ndarray:
    """Median over tasks of NRG = (s - s_ref) / (s_max - s_ref), x100 (even task count: mean of the two middle
    values). The reference scores 0."""
    return 100.0 * np.median(task_nrg(scores, ctx), axis=-1)


@register_aggregate("anrg", needs=("reference",), check=_check_reference_below_max)
def anrg(scores: np.ndarray, ctx: AggregateContext) -> np.ndarray:
    """Mean over tasks of NRG = (s - s_ref) / (s_max - s_ref), x100. The reference scores 0."""
    return 100.0 * task_nrg(scores, ctx).mean(axis=-1)


@register_aggregate("borda")
def borda(scores: np.ndarray, ctx: AggregateContext) -> np.ndarray:
    """Borda count: sum over tasks of M - rank + 1 points (ties share the average rank, so each task hands out
    M(M+1)/2 points and a method ranges from T to T*M)."""
    n_methods = scores.shape[-2]
    return (n_methods + 1 - task_ranks(scores)).sum(axis=-1)


@register_aggregate("zscore")
def zscore(scores: np.ndarray, ctx: AggregateContext) -> np.ndarray:
    """Mean over tasks of the per-task z-score (s - mean) / std over methods, population std (ddof=0); a task
    on which every method scores the same contributes 0."""
    mu = scores.mean(axis=-2, keepdims=True)
    sd = scores.std(axis=-2, keepdims=True)
    # Float noise leaves the std of identical scores at ~1e-15 rather than 0; such a task separates no one.
    flat = sd <= 1e-12 * np.maximum(1.0, np.abs(mu))
    z = np.where(flat, 0.0, (scores - mu) / np.where(flat, 1.0, sd))
    return z.mean(axis=-1)


def decathlon_points(errors: np.ndarray, e_max: np.ndarray, gamma: float = 2.0) -> np.ndarray:
    """Sum over tasks of alpha_t * max(0, E_max - E)^gamma with alpha_t = 1000 / E_max^gamma (perfect = 1000)."""
    alpha = 1000.0 / e_max**gamma
    return (alpha * np.maximum(0.0, e_max - errors) ** gamma).sum(axis=-1)


@register_aggregate("decathlon_reference", needs=("reference",), check=_check_reference_below_max)
def decathlon_reference(scores: np.ndarray, ctx: AggregateContext) -> np.ndarray:
    """Visual Decathlon score, TPAMI'19 transfer convention: E_max = the reference's error (E = s_max - s), so
    the reference scores 0 and a perfect method 1000 per task; gamma = 2."""
    errors = ctx.s_max - scores
    return decathlon_points(errors, _row(errors, ctx.reference))


@register_aggregate("decathlon_double_baseline", needs=("baseline",), check=_check_baseline_below_max)
def decathlon_double_baseline(scores: np.ndarray, ctx: AggregateContext) -> np.ndarray:
    """Visual Decathlon score, Rebuffi et al. 2017 convention: E_max = 2 x the baseline's error (E = s_max - s),
    so the baseline scores 250 per task and a perfect method 1000; gamma = 2."""
    errors = ctx.s_max - scores
    return decathlon_points(errors, 2.0 * _row(errors, ctx.baseline))


@register_aggregate("relative_gain", needs=("reference",), check=_check_reference_positive)
def relative_gain(scores: np.ndarray, ctx: AggregateContext) -> np.ndarray:
    """Mean over tasks of the relative gain (s - s_ref) / s_ref, x100: percent of the reference's own score
    (arithmetic mean of per-task ratios). The reference scores 0."""
    ref = _row(scores, ctx.reference)
    return 100.0 * ((scores - ref) / ref).mean(axis=-1)


# ------------------------------------------------------------------------------------------- table handling


@dataclass(frozen=True)
class PreparedTable:
    """A validated score table and everything needed to evaluate aggregates on it (or on resamples of it)."""

    table: pd.DataFrame
    aggregates: tuple[Aggregate, ...]
    context: AggregateContext
    dropped_tasks: tuple[str, ...]
    decathlon_emax: str
    reference: str | None
    baseline: str | None

    def attrs(self) -> dict:
        """What a result built from this table must carry so its numbers can be read correctly."""
        return {
            "reference": self.reference,
            "baseline": self.baseline,
            "decathlon_emax": self.decathlon_emax,
            "s_max": dict(zip(self.context.tasks, self.context.s_max.tolist(), strict=True)),
            "tasks": list(self.context.tasks),
            "dropped_tasks": list(self.dropped_tasks),
            "higher_is_better": {a.name: a.higher_is_better for a in self.aggregates},
            "definitions": {a.name: a.definition for a in self.aggregates},
        }


def _numeric_table(table: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise DataError(f"score table must be a pandas DataFrame (methods x tasks), got {type(table).__name__}")
    if table.shape[0] == 0 or table.shape[1] == 0:
        raise DataError(f"score table is empty ({table.shape[0]} methods x {table.shape[1]} tasks): it needs at "
                        "least one method (row) and one task (column)")
    for axis, label in ((table.index, "method"), (table.columns, "task")):
        duplicated = sorted({str(n) for n in axis[axis.duplicated()]})
        if duplicated:
            raise DataError(f"score table has duplicate {label} name(s) {duplicated}: give each a unique name")
    for column in table.columns:
        converted = pd.to_numeric(table[column], errors="coerce")
        bad = table.index[converted.isna() & table[column].notna()]
        if len(bad):
            raise DataError(f"score table column {column!r} has a non-numeric value {table.at[bad[0], column]!r} in "
                            f"row {bad[0]!r}: every task column must hold scores in percent")
    numeric = table.apply(pd.to_numeric).astype(float)
    numeric.index = [str(n) for n in numeric.index]
    numeric.columns = [str(c) for c in numeric.columns]
    numeric.index.name = "method"
    return numeric


def _handle_missing(table: pd.DataFrame, missing: str) -> tuple[pd.DataFrame, tuple[str, ...]]:
    holes = table.isna()
    if not holes.to_numpy().any():
        return table, ()
    rows, cols = np.nonzero(holes.to_numpy())
    cells = [f"({table.index[m]}, {table.columns[t]})" for m, t in zip(rows, cols, strict=True)]
    listed = ", ".join(cells[:_MAX_LISTED_CELLS]) + (f" and {len(cells) - _MAX_LISTED_CELLS} more"
                                                      if len(cells) > _MAX_LISTED_CELLS else "")
    if missing == "error":
        raise DataError(f"score table has {len(cells)} missing (method, task) cell(s): {listed}; every method needs "
                        "a score on every task: fill them, or pass missing='drop_tasks' (--missing drop_tasks) to "
                        "aggregate over the complete tasks only")
    dropped = tuple(table.columns[holes.any(axis=0)])
    kept = table.drop(columns=list(dropped))
    if kept.shape[1] == 0:
        raise DataError(f"score table has no task that every method completed (missing: {listed}): nothing to "
                        "aggregate")
    warnings.warn(f"aggregating over {kept.shape[1]} complete task(s) only; dropped {len(dropped)} task(s) with "
                  f"missing scores: {', '.join(dropped)} (missing cells: {listed})", UserWarning, stacklevel=4)
    return kept, dropped


def _s_max_vector(s_max: float | Mapping[str, float], tasks: Sequence[str]) -> np.ndarray:
    if isinstance(s_max, Mapping):
        absent = [t for t in tasks if t not in s_max]
        if absent:
            raise ConfigError(f"s_max has no value for task(s) {', '.join(absent)}: give one per task or a single "
                              "number")
        values = np.array([float(s_max[t]) for t in tasks])
    else:
        values = np.full(len(tasks), float(s_max))
    if not np.all(np.isfinite(values) & (values > 0)):
        raise ConfigError(f"s_max must be a positive number per task (the perfect score), got {values.tolist()}")
    return values


def _check_range(table: pd.DataFrame, s_max: np.ndarray) -> None:
    values = table.to_numpy()
    bad = ~np.isfinite(values) | (values < 0) | (values > s_max)
    if bad.any():
        m, t = (int(i[0]) for i in np.nonzero(bad))
        raise DataError(f"score {float(values[m, t])!r} of method {table.index[m]!r} on task {table.columns[t]!r} "
                        f"is outside [0, s_max={s_max[t]:g}]: scores must be percentages (0-100); pass s_max "
                        "(--s-max) if your metric's perfect score differs")
    if values.max() <= 1.0 and s_max.min() >= 100.0:
        warnings.warn("every score is <= 1: these look like fractions, but aggregates expect percentages (0-100); "
                      "multiply by 100", UserWarning, stacklevel=4)


def _row_position(table: pd.DataFrame, name: str | None, role: str) -> int | None:
    if name is None:
        return None
    if name not in table.index:
        raise UnknownNameError(f"{role} {name!r} is not a method of the score table; methods: "
                               f"{', '.join(table.index)}")
    return int(table.index.get_loc(name))


def _resolve_aggregates(
    aggregates: str | Sequence[str] | None, decathlon_emax: str, available: set[str]
) -> tuple[Aggregate, ...]:
    if aggregates is None:
        unselected = {f"decathlon_{c}" for c in DECATHLON_CONVENTIONS if c != decathlon_emax}
        names = [n for n in DEFAULT_ORDER if n not in unselected and available.issuperset(AGGREGATES.get(n).needs)]
    else:
        raw = aggregates.split(",") if isinstance(aggregates, str) else list(aggregates)
        # "decathlon" is shorthand for the convention chosen by decathlon_emax; the column name always states it.
        names = [f"decathlon_{decathlon_emax}" if n.strip() == "decathlon" else n.strip() for n in raw if n.strip()]
    resolved = tuple(AGGREGATES.get(n) for n in dict.fromkeys(names))
    if not resolved:
        raise ConfigError("no aggregate requested: name at least one, e.g. mean,mnrg")
    for aggregate in resolved:
        lacking = [need for need in aggregate.needs if need not in available]
        if lacking:
            raise ConfigError(f"aggregate {aggregate.name!r} needs a {lacking[0]} method: pass {lacking[0]}=NAME "
                              f"(--{lacking[0]} NAME)")
    return resolved


def prepare_table(
    table: pd.DataFrame,
    reference: str | None = None,
    aggregates: str | Sequence[str] | None = None,
    s_max: float | Mapping[str, float] = 100.0,
    decathlon_emax: str = "reference",
    baseline: str | None = None,
    *,
    missing: str = "error",
) -> PreparedTable:
    """Validate a score table and resolve the aggregates; raises DataError/ConfigError/UnknownNameError."""
    if decathlon_emax not in DECATHLON_CONVENTIONS:
        raise ConfigError(f"decathlon_emax must be one of {', '.join(DECATHLON_CONVENTIONS)}, got {decathlon_emax!r}")
    if missing not in MISSING_POLICIES:
        raise ConfigError(f"missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")
    numeric, dropped = _handle_missing(_numeric_table(table), missing)
    s_max_vector = _s_max_vector(s_max, list(numeric.columns))
    _check_range(numeric, s_max_vector)
    ref = _row_position(numeric, reference, "reference")
    # Rebuffi's baseline defaults to the reference: in a transfer study the reference is the baseline.
    baseline = baseline if baseline is not None else reference
    base = _row_position(numeric, baseline, "baseline")
    available = {role for role, pos in (("reference", ref), ("baseline", base)) if pos is not None}
    resolved = _resolve_aggregates(aggregates, decathlon_emax, available)
    context = AggregateContext(tuple(numeric.index), tuple(numeric.columns), s_max_vector, ref, base)
    scores = numeric.to_numpy()
    for aggregate in resolved:
        if aggregate.check is not None:
            aggregate.check(scores, context)
    return PreparedTable(numeric, resolved, context, dropped, decathlon_emax, reference, baseline)


def compute_aggregates(
    table: pd.DataFrame,
    reference: str | None = None,
    aggregates: str | Sequence[str] | None = None,
    s_max: float | Mapping[str, float] = 100.0,
    decathlon_emax: str = "reference",
    baseline: str | None = None,
    *,
    missing: str = "error",
) -> pd.DataFrame:
    """Universality aggregates of a methods x tasks score table (see the module docstring for definitions).

    Args:
        table: index = method names, columns = task names, values = scores in percent (0..s_max).
        reference: the method NRG, relative gain and the Decathlon E_max are relative to.
        aggregates: names from `AGGREGATES` (list or comma string); "decathlon" means the convention chosen by
            `decathlon_emax`. Default: every aggregate in DEFAULT_ORDER the given reference/baseline allows.
        s_max: the perfect score, one number or {task: s_max}.
        decathlon_emax: "reference" (TPAMI'19: E_max = reference error) or "double_baseline" (Rebuffi:
            E_max = 2 x baseline error).
        baseline: the Decathlon baseline for "double_baseline"; defaults to `reference`.
        missing: "error" (default) refuses a table with missing cells and lists them; "drop_tasks" aggregates
            over the tasks every method completed and warns which were dropped.

    Returns:
        rows = methods (input order), columns = aggregate names; `attrs` records the reference, baseline,
        Decathlon convention, s_max, tasks used, dropped tasks, higher_is_better and definition per column.

    Example:
        >>> table = pd.DataFrame({"cub": [60.0, 70.0], "voc07": [80.0, 85.0]}, index=["ref", "new"])
        >>> compute_aggregates(table, reference="ref", aggregates=["mean", "mnrg"]).loc["new"].round(2).tolist()
        [77.5, 25.0]
    """
    prepared = prepare_table(table, reference, aggregates, s_max, decathlon_emax, baseline, missing=missing)
    scores = prepared.table.to_numpy()
    result = pd.DataFrame(
        {a.name: a(scores, prepared.context) for a in prepared.aggregates}, index=prepared.table.index
    )
    result.attrs.update(prepared.attrs())
    return result


def per_task_nrg(table: pd.DataFrame, reference: str, s_max: float | Mapping[str, float] = 100.0) -> pd.DataFrame:
    """Per-task NRG x100 of every method (the numbers mNRG takes the median of), same shape as `table`."""
    prepared = prepare_table(table, reference, ["mnrg"], s_max)
    values = 100.0 * task_nrg(prepared.table.to_numpy(), prepared.context)
    return pd.DataFrame(values, index=prepared.table.index, columns=prepared.table.columns)
