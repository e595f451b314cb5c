"""How well an estimator ranks backbones the way real probes do: Kendall's tau and weighted tau per task.

Weighted tau (Vigna 2015, `scipy.stats.weightedtau`) with the hyperbolic weigher 1/(r + 1) and rank=True
(the average of the two lexicographic rankings) is what the transferability literature reports (LogME, tllib's
"10 CNNs x 8 datasets" table): swaps among the top-ranked backbones cost more than swaps among the bottom ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from unirep.errors import DataError
from unirep.numerics import check_finite

AGREEMENT_COLUMNS = ("backbone", "task", "estimator", "estimator_score", "probe_score")
MIN_BACKBONES = 3  # with two backbones tau is +-1 and says nothing


def _paired(estimator_scores, probe_scores) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(estimator_scores, dtype=np.float64)
    y = np.asarray(probe_scores, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise DataError(f"tau needs two 1-d score lists of equal length, got shapes {x.shape} and {y.shape}")
    for scores, which in ((x, "estimator"), (y, "probe")):
        check_finite(scores, f"tau: {which} scores", hint="drop the failed runs before comparing rankings")
    return x, y


def kendall_tau(estimator_scores, probe_scores) -> float:
    """Kendall's tau-b between the two scorings of the same backbones (NaN when either is constant)."""
    x, y = _paired(estimator_scores, probe_scores)
    return float(stats.kendalltau(x, y).statistic)


def weighted_tau(estimator_scores, probe_scores) -> float:
    """Weighted Kendall tau with the hyperbolic weigher, averaged over both rankings (scipy's defaults)."""
    x, y = _paired(estimator_scores, probe_scores)
    return float(stats.weightedtau(x, y, rank=True, weigher=None, additive=True).statistic)


@dataclass(frozen=True)
class Agreement:
    """`per_task`: one row per (task, estimator) with n_backbones, kendall_tau, weighted_tau.
    `mean`: one row per estimator with the mean over its tasks (a NaN tau, from constant scores, is left out of
    the mean) and n_tasks, the tasks it was compared on. `skipped_tasks`: tasks that had fewer than
    MIN_BACKBONES backbones for at least one estimator."""

    per_task: pd.DataFrame
    mean: pd.DataFrame
    skipped_tasks: tuple[str, ...]


def _check_table(table: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in AGREEMENT_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"agreement table lacks column(s) {missing}; it needs {list(AGREEMENT_COLUMNS)}")
    duplicated = table.duplicated(subset=["backbone", "task", "estimator"])
    if duplicated.any():
        first = table.loc[duplicated, ["backbone", "task", "estimator"]].iloc[0].tolist()
        raise DataError(f"agreement table has several rows for (backbone, task, estimator) = {first}; keep one")
    return table


def estimator_agreement(table: pd.DataFrame) -> Agreement:
    """Per (task, estimator) Kendall tau and weighted tau of estimator scores against probe scores.

    Args:
        table: long format, one row per (backbone, task, estimator) with columns `AGREEMENT_COLUMNS`.

    Example:
        >>> agreement = estimator_agreement(df)
        >>> agreement.mean.set_index("estimator")["weighted_tau"]
    """
    table = _check_table(table)
    rows, skipped = [], set()
    for (task, estimator), group in table.groupby(["task", "estimator"], sort=True):
        if group["backbone"].nunique() < MIN_BACKBONES:
            skipped.add(str(task))
            continue
        x, y = group["estimator_score"].to_numpy(), group["probe_score"].to_numpy()
        rows.append({
            "task": task, "estimator": estimator, "n_backbones": len(group),
            "kendall_tau": kendall_tau(x, y), "weighted_tau": weighted_tau(x, y),
        })
    per_task = pd.DataFrame(rows, columns=["task", "estimator", "n_backbones", "kendall_tau", "weighted_tau"])
    mean = (
        per_task.groupby("estimator", sort=True)
        .agg(kendall_tau=("kendall_tau", "mean"), weighted_tau=("weighted_tau", "mean"), n_tasks=("task", "nunique"))
        .reset_index()
    )
    return Agreement(per_task=per_task, mean=mean, skipped_tasks=tuple(sorted(skipped)))
