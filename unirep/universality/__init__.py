"""Universality: aggregate per-task scores into one number per representation, with bootstrap CIs.

`compute_aggregates` turns a methods x tasks score table into mean, mean rank, mNRG/aNRG, Borda, z-score,
Visual Decathlon and relative gain (definitions in `unirep.universality.aggregates`); the bootstrap module
gives percentile CIs from per-example test predictions, paired across methods.
"""

from unirep.universality.aggregates import (
    AGGREGATES,
    DECATHLON_CONVENTIONS,
    DEFAULT_ORDER,
    MISSING_POLICIES,
    Aggregate,
    AggregateContext,
    compute_aggregates,
    per_task_nrg,
    prepare_table,
    register_aggregate,
)
from unirep.universality.bootstrap import (
    ConfidenceInterval,
    bootstrap_aggregate_ci,
    bootstrap_task_ci,
    iter_bootstrap_indices,
    paired_difference_ci,
    resolve_metric,
    task_resample_seed,
)
from unirep.universality.table import read_score_table

__all__ = [
    "AGGREGATES",
    "DECATHLON_CONVENTIONS",
    "DEFAULT_ORDER",
    "MISSING_POLICIES",
    "Aggregate",
    "AggregateContext",
    "ConfidenceInterval",
    "bootstrap_aggregate_ci",
    "bootstrap_task_ci",
    "compute_aggregates",
    "iter_bootstrap_indices",
    "paired_difference_ci",
    "per_task_nrg",
    "prepare_table",
    "read_score_table",
    "register_aggregate",
    "resolve_metric",
    "task_resample_seed",
]
