"""Rank agreement between estimator scores and probe scores: tau, weighted tau, and the per-task table."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from unirep.errors import DataError
from unirep.estimators.agreement import estimator_agreement, kendall_tau, weighted_tau


def tau_by_pairs(x, y):
    """Kendall's tau without ties: (concordant - discordant) / number of pairs."""
    signs = [np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in itertools.combinations(range(len(x)), 2)]
    return sum(signs) / len(signs)


def weighted_tau_by_pairs(x, y):
    """Vigna's weighted tau without ties, hyperbolic weigher 1/(r+1) with additive pair weights; ranks r from
    the decreasing order of one scoring, averaged over ranking by x and by y."""
    def one_ranking(order_by):
        rank = np.empty(len(order_by), dtype=int)
        rank[np.argsort(-order_by)] = np.arange(len(order_by))
        num = den = 0.0
        for i, j in itertools.combinations(range(len(x)), 2):
            w = 1 / (rank[i] + 1) + 1 / (rank[j] + 1)
            num += w * np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
            den += w
        return num / den
    return (one_ranking(x) + one_ranking(y)) / 2


def test_tau_and_weighted_tau_match_pairwise_definitions():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=9), rng.normal(size=9)
    assert kendall_tau(x, y) == pytest.approx(tau_by_pairs(x, y), rel=1e-12)
    assert weighted_tau(x, y) == pytest.approx(weighted_tau_by_pairs(x, y), rel=1e-12)
    assert kendall_tau(x, 3 * x + 1) == pytest.approx(1.0)
    assert weighted_tau(x, -x) == pytest.approx(-1.0)


def test_weighted_tau_punishes_swaps_at_the_top_more():
    probe = np.arange(8.0)[::-1]  # backbone 0 best
    swap_top = probe.copy()
    swap_top[[0, 1]] = swap_top[[1, 0]]
    swap_bottom = probe.copy()
    swap_bottom[[6, 7]] = swap_bottom[[7, 6]]
    assert kendall_tau(swap_top, probe) == pytest.approx(kendall_tau(swap_bottom, probe))
    assert weighted_tau(swap_top, probe) < weighted_tau(swap_bottom, probe)


def make_table():
    rng = np.random.default_rng(1)
    rows = []
    for task, n_backbones in [("digits", 5), ("fashion", 4), ("tiny", 2)]:
        probe = rng.uniform(50, 90, size=n_backbones)
        for estimator, noise in [("logme", 1.0), ("hscore", 20.0)]:
            est = probe + rng.normal(scale=noise, size=n_backbones)
            rows += [{"backbone": f"b{i}", "task": task, "estimator": estimator, "estimator_score": est[i],
                      "probe_score": probe[i]} for i in range(n_backbones)]
    return pd.DataFrame(rows)


def test_estimator_agreement_per_task_and_mean():
    table = make_table()
    agreement = estimator_agreement(table)
    assert agreement.skipped_tasks == ("tiny",)
    assert len(agreement.per_task) == 4  # 2 tasks with >= 3 backbones x 2 estimators
    for row in agreement.per_task.itertuples():
        group = table[(table.task == row.task) & (table.estimator == row.estimator)]
        x, y = group.estimator_score.to_numpy(), group.probe_score.to_numpy()
        assert row.kendall_tau == pytest.approx(tau_by_pairs(x, y))
        assert row.weighted_tau == pytest.approx(weighted_tau_by_pairs(x, y))
        assert row.n_backbones == len(group)
    means = agreement.mean.set_index("estimator")
    per_task = agreement.per_task.set_index("estimator")
    for estimator in ("logme", "hscore"):
        assert means.loc[estimator, "kendall_tau"] == pytest.approx(per_task.loc[estimator, "kendall_tau"].mean())
        assert means.loc[estimator, "n_tasks"] == 2


def test_estimator_agreement_rejects_bad_tables():
    table = make_table()
    with pytest.raises(DataError, match="lacks column"):
        estimator_agreement(table.drop(columns="probe_score"))
    with pytest.raises(DataError, match="several rows"):
        estimator_agreement(pd.concat([table, table.iloc[:1]]))
    with pytest.raises(DataError, match="NaN"):
        kendall_tau([1.0, np.nan, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(DataError, match="equal length"):
        weighted_tau([1.0, 2.0], [1.0, 2.0, 3.0])
