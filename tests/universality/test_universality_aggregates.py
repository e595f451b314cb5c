"""Aggregates: hand-computed values from the PROTOCOLS.md definitions, properties, and every input error."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from unirep.errors import ConfigError, DataError, UnknownNameError
from unirep.universality import AGGREGATES, DEFAULT_ORDER, compute_aggregates, per_task_nrg

ALL = list(DEFAULT_ORDER)


def make_table(rows: dict[str, list[float]], tasks: list[str] | None = None) -> pd.DataFrame:
    width = len(next(iter(rows.values())))
    return pd.DataFrame.from_dict(rows, orient="index", columns=tasks or [f"t{i}" for i in range(width)])


# 4 tasks, so the median is the mean of the two middle NRG values.
HAND = make_table({"ref": [60.0, 80.0, 70.0, 50.0], "new": [70.0, 85.0, 75.0, 40.0], "low": [50.0, 80.0, 60.0, 45.0]},
                  ["cub", "voc07", "c101", "pets"])


def test_mnrg_anrg_by_hand_even_task_count():
    result = compute_aggregates(HAND, reference="ref", aggregates=["mnrg", "anrg"])
    # new: NRG = 10/40, 5/20, 5/30, -10/50 -> sorted -0.2, 1/6, 0.25, 0.25 -> median (1/6 + 0.25)/2
    assert result.loc["new", "mnrg"] == pytest.approx(100 * (1 / 6 + 0.25) / 2)
    assert result.loc["new", "anrg"] == pytest.approx(100 * (0.25 + 0.25 + 1 / 6 - 0.2) / 4)
    # low: -10/40, 0/20, -10/30, -5/50 -> sorted -1/3, -0.25, -0.1, 0 -> median (-0.25 - 0.1)/2
    assert result.loc["low", "mnrg"] == pytest.approx(100 * (-0.25 - 0.1) / 2)
    assert result.loc["ref", ["mnrg", "anrg"]].tolist() == [0.0, 0.0]


def test_per_task_nrg_and_s_max_per_task():
    nrg = per_task_nrg(HAND, "ref", s_max={"cub": 80.0, "voc07": 100.0, "c101": 100.0, "pets": 100.0})
    assert nrg.loc["new", "cub"] == pytest.approx(100 * 10 / 20)  # s_max 80 on cub
    assert nrg.loc["new", "voc07"] == pytest.approx(100 * 5 / 20)
    assert nrg.shape == HAND.shape


def test_ranks_borda_with_ties_by_hand():
    # voc07: ref and low tie for 2nd/3rd -> both 2.5; points M - rank + 1 = 1.5 each.
    result = compute_aggregates(HAND, aggregates=["mean_rank", "borda"])
    ranks = {"ref": [2, 2.5, 2, 1], "new": [1, 1, 1, 3], "low": [3, 2.5, 3, 2]}
    for method, r in ranks.items():
        assert result.loc[method, "mean_rank"] == pytest.approx(np.mean(r))
        assert result.loc[method, "borda"] == pytest.approx(sum(4 - x for x in r))
    assert result["borda"].sum() == pytest.approx(4 * 3 * 4 / 2)


def test_mean_and_zscore_against_scipy():
    result = compute_aggregates(HAND, aggregates=["mean", "zscore"])
    assert result["mean"].tolist() == pytest.approx(HAND.mean(axis=1).tolist())
    expected = stats.zscore(HAND.to_numpy(), axis=0, ddof=0).mean(axis=1)  # population std, per task
    assert result["zscore"].to_numpy() == pytest.approx(expected)


def test_zscore_constant_task_contributes_zero():
    table = make_table({"a": [50.0, 0.1 * 3], "b": [50.0, 0.3], "c": [50.0, 0.1 + 0.2]})
    assert compute_aggregates(table, aggregates="zscore")["zscore"].tolist() == [0.0, 0.0, 0.0]


def test_decathlon_both_conventions_by_hand():
    table = make_table({"ref": [60.0, 80.0], "new": [80.0, 70.0], "perfect": [100.0, 100.0]})
    transfer = compute_aggregates(table, reference="ref", aggregates="decathlon")
    # E_max = reference error (40, 20); new's errors 20, 30 -> 1000/40^2 * 20^2 + 0 = 250
    assert list(transfer.columns) == ["decathlon_reference"]
    assert transfer["decathlon_reference"].tolist() == pytest.approx([0.0, 250.0, 2000.0])
    rebuffi = compute_aggregates(table, reference="ref", aggregates="decathlon", decathlon_emax="double_baseline")
    # E_max = 2 x baseline error (80, 40): ref 2 x 250; new 1000/6400*60^2 + 1000/1600*10^2 = 562.5 + 62.5
    assert list(rebuffi.columns) == ["decathlon_double_baseline"]
    assert rebuffi["decathlon_double_baseline"].tolist() == pytest.approx([500.0, 625.0, 2000.0])
    assert rebuffi.attrs["decathlon_emax"] == "double_baseline" and rebuffi.attrs["baseline"] == "ref"


def test_decathlon_explicit_baseline_and_s_max():
    table = make_table({"ref": [60.0, 40.0], "base": [70.0, 45.0]})
    result = compute_aggregates(table, reference="ref", baseline="base", aggregates="decathlon_double_baseline",
                                s_max={"t0": 100.0, "t1": 50.0})
    # base is the baseline: 250 per task; ref errors 40, 10 vs E_max 60, 10 -> 1000/3600*400 + 0
    assert result["decathlon_double_baseline"].tolist() == pytest.approx([1000 / 3600 * 400, 500.0])


def test_relative_gain_by_hand():
    table = make_table({"ref": [50.0, 80.0], "new": [60.0, 72.0]})
    assert compute_aggregates(table, reference="ref", aggregates="relative_gain")["relative_gain"].tolist() == \
        pytest.approx([0.0, (20.0 - 10.0) / 2])


def test_default_aggregates_follow_reference():
    assert list(compute_aggregates(HAND).columns) == ["mean", "mean_rank", "borda", "zscore"]
    with_ref = compute_aggregates(HAND, reference="ref")
    assert list(with_ref.columns) == ["mean", "mean_rank", "mnrg", "anrg", "borda", "zscore",
                                      "decathlon_reference", "relative_gain"]
    assert with_ref.attrs["higher_is_better"]["mean_rank"] is False
    assert set(with_ref.attrs["definitions"]) == set(with_ref.columns)
    assert list(with_ref.index) == ["ref", "new", "low"]


def test_registry_lists_every_default():
    assert set(DEFAULT_ORDER) <= set(AGGREGATES.list())


# ------------------------------------------------------------------------------------------------- errors


def test_missing_cells_refused_with_list():
    table = HAND.copy()
    table.loc["new", "cub"] = np.nan
    table.loc["low", "pets"] = np.nan
    with pytest.raises(DataError, match=r"2 missing .*\(new, cub\), \(low, pets\)"):
        compute_aggregates(table, reference="ref")


def test_missing_drop_tasks_warns_and_uses_complete_tasks():
    table = HAND.copy()
    table.loc["new", "cub"] = np.nan
    with pytest.warns(UserWarning, match="dropped 1 task.*cub"):
        result = compute_aggregates(table, reference="ref", missing="drop_tasks")
    expected = compute_aggregates(HAND.drop(columns="cub"), reference="ref")
    pd.testing.assert_frame_equal(result, expected)
    assert result.attrs["dropped_tasks"] == ["cub"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"reference": "resnet"}, UnknownNameError, "reference 'resnet' .*methods: ref, new, low"),
        ({"baseline": "x", "reference": "ref"}, UnknownNameError, "baseline 'x'"),
        ({"aggregates": ["mnrg"]}, ConfigError, "'mnrg' needs a reference"),
        ({"aggregates": "mnrgg", "reference": "ref"}, UnknownNameError, "did you mean mnrg"),
        ({"decathlon_emax": "triple"}, ConfigError, "decathlon_emax"),
        ({"missing": "ignore"}, ConfigError, "missing must be"),
        ({"s_max": {"cub": 100.0}}, ConfigError, "no value for task.*voc07"),
        ({"s_max": 0.0}, ConfigError, "positive"),
        ({"s_max": 75.0}, DataError, "outside \\[0, s_max=75\\]"),
        ({"aggregates": ""}, ConfigError, "no aggregate"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        compute_aggregates(HAND, **kwargs)


@pytest.mark.parametrize(
    ("rows", "kwargs", "message"),
    [
        ({"ref": [100.0, 50.0], "b": [90.0, 60.0]}, {"aggregates": "mnrg"}, "reference already scores s_max.*t0"),
        ({"ref": [100.0, 50.0], "b": [90.0, 60.0]}, {"aggregates": "decathlon"}, "reference already scores s_max"),
        ({"ref": [0.0, 50.0], "b": [90.0, 60.0]}, {"aggregates": "relative_gain"}, "reference scores 0.*t0"),
        ({"ref": [100.0, 50.0], "b": [90.0, 60.0]}, {"aggregates": "decathlon_double_baseline"}, "zero error"),
        ({"ref": [101.0, 50.0], "b": [90.0, 60.0]}, {}, "101.0 of method 'ref' on task 't0' is outside"),
        ({"ref": [-1.0, 50.0], "b": [90.0, 60.0]}, {}, "outside"),
        ({"ref": [np.inf, 50.0], "b": [90.0, 60.0]}, {}, "outside"),
    ],
)
def test_bad_scores(rows, kwargs, message):
    with pytest.raises(DataError, match=message):
        compute_aggregates(make_table(rows), reference="ref", **kwargs)


def test_bad_tables():
    with pytest.raises(DataError, match="column 't1' has a non-numeric value 'oops' in row 'b'"):
        compute_aggregates(pd.DataFrame({"t0": [1.0, 2.0], "t1": ["3", "oops"]}, index=["a", "b"]))
    with pytest.raises(DataError, match="duplicate method"):
        compute_aggregates(pd.DataFrame({"t0": [1.0, 2.0]}, index=["a", "a"]))
    with pytest.raises(DataError, match="empty"):
        compute_aggregates(pd.DataFrame(index=["a"]))
    with pytest.raises(DataError, match="DataFrame"):
        compute_aggregates([[1.0, 2.0]])


def test_fractions_warn():
    with pytest.warns(UserWarning, match="fractions"):
        compute_aggregates(make_table({"a": [0.5, 0.7], "b": [0.6, 0.8]}))


# --------------------------------------------------------------------------------------------- properties

score = st.one_of(st.integers(100, 9900).map(lambda v: v / 100), st.sampled_from([50.0, 75.0]))  # ties too


@st.composite
def tables(draw, min_methods: int = 2):
    n_methods = draw(st.integers(min_methods, 6))
    n_tasks = draw(st.integers(1, 7))
    values = draw(st.lists(st.lists(score, min_size=n_tasks, max_size=n_tasks),
                           min_size=n_methods, max_size=n_methods))
    return pd.DataFrame(values, index=[f"m{i}" for i in range(n_methods)], columns=[f"t{j}" for j in range(n_tasks)])


def _quiet(table, aggregates=ALL, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the "looks like fractions" warning when every drawn score is <= 1
        return compute_aggregates(table, aggregates=aggregates, **kwargs)


@settings(max_examples=60, deadline=None)
@given(tables(), st.data())
def test_reference_scores_zero(table, data):
    reference = data.draw(st.sampled_from(list(table.index)))
    result = _quiet(table, reference=reference)
    assert result.loc[reference, ["mnrg", "anrg", "relative_gain", "decathlon_reference"]].tolist() == [0.0] * 4


@settings(max_examples=60, deadline=None)
@given(tables(), st.data())
def test_invariant_to_task_and_method_order(table, data):
    reference = data.draw(st.sampled_from(list(table.index)))
    rows = data.draw(st.permutations(list(table.index)))
    columns = data.draw(st.permutations(list(table.columns)))
    original = _quiet(table, reference=reference)
    shuffled = _quiet(table.loc[rows, columns], reference=reference).loc[original.index]
    np.testing.assert_allclose(shuffled.to_numpy(), original.to_numpy(), rtol=1e-12, atol=1e-9)


@settings(max_examples=80, deadline=None)
@given(tables(min_methods=3), st.data())
def test_dominating_method_never_ranks_below(table, data):
    """Method m0 := m1 raised on some tasks (>= everywhere, > on at least one), so m0 dominates m1."""
    n_tasks = table.shape[1]
    raises = data.draw(st.lists(st.integers(0, 99).map(lambda v: v / 100), min_size=n_tasks, max_size=n_tasks))
    strict = data.draw(st.integers(0, n_tasks - 1))
    raises[strict] = max(raises[strict], 0.5)
    table.loc["m0"] = (table.loc["m1"] + np.array(raises)).to_numpy()  # scores stay below 100
    reference = data.draw(st.sampled_from(list(table.index)))
    result = _quiet(table, reference=reference)
    best, worse = result.loc["m0"], result.loc["m1"]
    for name in ALL:
        if result.attrs["higher_is_better"][name]:
            assert best[name] >= worse[name], name
        else:
            assert best[name] <= worse[name], name
    assert best["mean"] > worse["mean"]


@settings(max_examples=60, deadline=None)
@given(tables())
def test_borda_totals(table):
    n_methods, n_tasks = table.shape
    result = _quiet(table, aggregates=["borda", "mean_rank"])
    assert result["borda"].sum() == pytest.approx(n_tasks * n_methods * (n_methods + 1) / 2)
    assert result["borda"].between(n_tasks, n_tasks * n_methods).all()
    # Borda and mean rank carry the same information: points = T * (M + 1 - mean rank).
    np.testing.assert_allclose(result["borda"], n_tasks * (n_methods + 1 - result["mean_rank"]))


@settings(max_examples=60, deadline=None)
@given(tables(), st.data())
def test_decathlon_perfect_method_scores_1000_per_task(table, data):
    reference = data.draw(st.sampled_from(list(table.index)))
    table.loc["perfect"] = 100.0
    result = _quiet(table, reference=reference)
    n_tasks = table.shape[1]
    assert result.loc["perfect", "decathlon_reference"] == pytest.approx(1000.0 * n_tasks)
    double = _quiet(table, reference=reference, decathlon_emax="double_baseline")
    assert double.loc["perfect", "decathlon_double_baseline"] == pytest.approx(1000.0 * n_tasks)
    assert double.loc[reference, "decathlon_double_baseline"] == pytest.approx(250.0 * n_tasks)
    assert (result["decathlon_reference"] >= 0).all()
