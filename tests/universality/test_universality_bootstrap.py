"""Bootstrap CIs: batched metrics equal per-resample loops, intervals behave, pairing works, errors are clear."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from unirep.errors import ConfigError, DataError, UnknownNameError
from unirep.metrics import Metric
from unirep.universality import (
    bootstrap_aggregate_ci,
    bootstrap_task_ci,
    compute_aggregates,
    iter_bootstrap_indices,
    paired_difference_ci,
    resolve_metric,
    task_resample_seed,
)


def predictions_with_accuracy(labels: np.ndarray, accuracy: float, n_classes: int, seed: int) -> np.ndarray:
    """Labels with a random (1 - accuracy) fraction replaced by a different class."""
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(labels)) > accuracy
    shifted = (labels + rng.integers(1, n_classes, len(labels))) % n_classes
    return np.where(wrong, shifted, labels)


def labelled(n: int, n_classes: int = 5, seed: int = 0) -> np.ndarray:
    # Imbalanced classes, so mean per-class accuracy differs from top-1.
    return np.random.default_rng(seed).choice(n_classes, size=n, p=np.linspace(1, 3, n_classes) / (2 * n_classes))


def loop_quantiles(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    return tuple(np.percentile(values, [50 * (1 - level), 50 * (1 + level)]))


def test_indices_are_chunked_deterministic_and_in_range():
    chunks = list(iter_bootstrap_indices(3_000_000, 5, seed=1))
    assert len(chunks) == 5 and all(c.shape == (1, 3_000_000) for c in chunks)  # 1 row per 4M-element chunk
    again = np.concatenate(list(iter_bootstrap_indices(1000, 30, seed=1)))
    assert again.shape == (30, 1000) and again.min() >= 0 and again.max() < 1000
    np.testing.assert_array_equal(again, np.concatenate(list(iter_bootstrap_indices(1000, 30, seed=1))))


@pytest.mark.parametrize(("metric", "sklearn_fn"), [(Metric.TOP1, accuracy_score),
                                                    (Metric.MEAN_PER_CLASS, balanced_accuracy_score)])
def test_batched_metrics_equal_the_metric_on_every_resample(metric, sklearn_fn):
    y = labelled(700)
    p = predictions_with_accuracy(y, 0.7, 5, seed=1)
    point, batched = resolve_metric(metric.value)
    assert point(y, p) == pytest.approx(100 * sklearn_fn(y, p))
    index = np.concatenate(list(iter_bootstrap_indices(len(y), 50, seed=3)))
    expected = [100 * sklearn_fn(y[row], p[row]) for row in index]
    np.testing.assert_allclose(batched(y, p, index), expected, rtol=1e-12)


def multilabel(n: int, n_classes: int, seed: int, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) targets in {1, 0, -1 (ignored)} and decision scores that favour the positives."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, n_classes)) < 0.15).astype(int)
    targets[rng.random((n, n_classes)) < 0.05] = -1
    scores = rng.normal(size=(n, n_classes)) + 1.5 * (targets == 1)
    return targets, scores if decimals is None else np.round(scores, decimals)


@pytest.mark.parametrize("metric", [Metric.MAP, Metric.MAP_VOC07])
@pytest.mark.parametrize("decimals", [None, 1])  # 1 decimal: many exactly tied scores
def test_batched_map_equals_the_metric_on_every_resample(metric, decimals):
    targets, scores = multilabel(250, 4, seed=5, decimals=decimals)
    _, batched = resolve_metric(metric)
    index = np.concatenate(list(iter_bootstrap_indices(len(targets), 30, seed=2)))
    expected = [metric(targets[row], scores[row]) for row in index]
    np.testing.assert_allclose(batched(targets, scores, index), expected, rtol=1e-12)


def test_task_ci_for_multilabel_map():
    targets, scores = multilabel(400, 5, seed=6)
    ci = bootstrap_task_ci(targets, scores, "map", n_boot=200)
    assert ci.estimate == pytest.approx(Metric.MAP(targets, scores)) and ci.low < ci.estimate < ci.high


def test_undefined_resamples_are_counted_and_left_out():
    targets = np.zeros((40, 2), dtype=int)
    targets[0, 0] = 1  # one positive: ~(39/40)^40 = 36% of resamples draw none, and mAP is undefined there
    scores = np.random.default_rng(0).normal(size=targets.shape)
    ci = bootstrap_task_ci(targets, scores, "map", n_boot=400)
    index = np.concatenate(list(iter_bootstrap_indices(40, 400, seed=0)))
    undefined = sum(targets[row, 0].sum() == 0 for row in index)
    assert ci.n_invalid == undefined and 0.25 < undefined / 400 < 0.5
    assert np.isfinite([ci.low, ci.high]).all()


def test_task_ci_equals_a_plain_percentile_loop():
    y = labelled(500)
    p = predictions_with_accuracy(y, 0.8, 5, seed=2)
    ci = bootstrap_task_ci(y, p, "mean_per_class", n_boot=300, seed=7)
    index = np.concatenate(list(iter_bootstrap_indices(len(y), 300, seed=7)))
    low, high = loop_quantiles(np.array([Metric.MEAN_PER_CLASS(y[r], p[r]) for r in index]))
    assert (ci.low, ci.high) == pytest.approx((low, high))
    assert ci.estimate == pytest.approx(100 * balanced_accuracy_score(y, p))
    assert ci.contains(ci.estimate) and ci.level == 0.95 and ci.n_boot == 300


def test_task_ci_width_matches_binomial_theory_and_narrows_with_n():
    widths = {}
    for n in (250, 4000):
        y = labelled(n, seed=n)
        p = predictions_with_accuracy(y, 0.8, 5, seed=n + 1)
        ci = bootstrap_task_ci(y, p, Metric.TOP1, n_boot=2000, seed=0)
        acc = ci.estimate / 100
        normal = 2 * 1.96 * np.sqrt(acc * (1 - acc) / n) * 100
        assert ci.width == pytest.approx(normal, rel=0.15)
        assert ci.contains(ci.estimate)
        widths[n] = ci.width
    assert widths[4000] < widths[250] / 3  # ~1/sqrt(16) = 1/4


def test_callable_metric_falls_back_to_a_loop():
    y = labelled(300)
    p = predictions_with_accuracy(y, 0.6, 5, seed=4)
    by_name = bootstrap_task_ci(y, p, "top1", n_boot=100, seed=5)
    by_callable = bootstrap_task_ci(y, p, lambda t, q: 100.0 * np.mean(t == q), n_boot=100, seed=5)
    assert by_callable == by_name


def test_paired_difference_of_identical_predictions_is_zero():
    y = labelled(400)
    p = predictions_with_accuracy(y, 0.7, 5, seed=6)
    ci = paired_difference_ci(y, p, p.copy(), "top1", n_boot=200)
    assert (ci.estimate, ci.low, ci.high) == (0.0, 0.0, 0.0)


def test_paired_difference_is_much_tighter_than_unpaired():
    """b = a with 3% of answers flipped: the paired CI sees only the flips; two separate CIs see all the noise."""
    y = labelled(2000)
    a = predictions_with_accuracy(y, 0.75, 5, seed=8)
    flip = np.random.default_rng(9).random(len(y)) < 0.03
    b = np.where(flip, (a + 1) % 5, a)
    ci = paired_difference_ci(y, a, b, "top1", n_boot=1000, seed=1)
    assert ci.estimate == pytest.approx(100 * (accuracy_score(y, a) - accuracy_score(y, b)))
    assert ci.low > 0  # a really is better: every flip of a correct answer makes b wrong
    separate = np.hypot(bootstrap_task_ci(y, a, "top1").width, bootstrap_task_ci(y, b, "top1").width)
    assert ci.width < separate / 3


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: bootstrap_task_ci([0, 1], [0], "top1"), DataError, "2 labels but 1 predictions"),
        (lambda: bootstrap_task_ci([], [], "top1"), DataError, "non-empty"),
        (lambda: bootstrap_task_ci([0, 1], [0, 1], "top5"), UnknownNameError, "unknown metric 'top5'"),
        (lambda: bootstrap_task_ci([0, 1], [0, 1], 3), ConfigError, "metric must be"),
        (lambda: bootstrap_task_ci([0, 1], [0, 1], "top1", level=95), ConfigError, "level"),
        (lambda: bootstrap_task_ci([0, 1], [0, 1], "top1", n_boot=0), ConfigError, "n_boot"),
        (lambda: paired_difference_ci([0, 1], [0, 1], [0], "top1"), DataError, "\\(b\\).*1 predictions"),
    ],
)
def test_bad_inputs(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ------------------------------------------------------------------------------------------ aggregate CIs


def examples_for(methods_accuracy: dict[str, float], tasks: dict[str, int]) -> dict:
    """{method: {task: (labels, predictions)}}: per task one shared label vector."""
    out: dict = {m: {} for m in methods_accuracy}
    for t, (task, n) in enumerate(tasks.items()):
        y = labelled(n, seed=100 + t)
        for k, (method, acc) in enumerate(methods_accuracy.items()):
            out[method][task] = (y, predictions_with_accuracy(y, acc, 5, seed=10 * t + k))
    return out


TASKS = {"cub": 300, "voc07": 200, "pets": 250}
METRICS = {"cub": "top1", "voc07": "mean_per_class", "pets": Metric.TOP1}


def test_aggregate_ci_point_estimates_equal_compute_aggregates():
    examples = examples_for({"ref": 0.6, "good": 0.8, "bad": 0.5}, TASKS)
    result = bootstrap_aggregate_ci(examples, METRICS, ["mean", "mnrg", "borda"], "ref", n_boot=200)
    scores = pd.DataFrame.from_dict(result.attrs["scores"], orient="index")
    expected = compute_aggregates(scores, reference="ref", aggregates=["mean", "mnrg", "borda"])
    for name in expected.columns:
        np.testing.assert_allclose(result[name], expected[name])
        assert (result[f"{name}_low"] <= result[name]).all() and (result[name] <= result[f"{name}_high"]).all()
    assert list(result.columns) == ["mean", "mean_low", "mean_high", "mnrg", "mnrg_low", "mnrg_high",
                                    "borda", "borda_low", "borda_high"]
    assert result.loc["good", "mnrg_low"] > 0 > result.loc["bad", "mnrg_high"]
    assert scores.loc["ref", "voc07"] == pytest.approx(Metric.MEAN_PER_CLASS(*examples["ref"]["voc07"]))


def test_aggregate_ci_equals_a_plain_loop_over_resampled_tables():
    examples = examples_for({"ref": 0.6, "good": 0.7, "bad": 0.55}, TASKS)
    n_boot = 60
    result = bootstrap_aggregate_ci(examples, METRICS, "anrg", "ref", n_boot=n_boot, seed=3)
    index = {task: np.concatenate(list(iter_bootstrap_indices(n, n_boot, task_resample_seed(3, task))))
             for task, n in TASKS.items()}
    values = []
    for b in range(n_boot):
        table = pd.DataFrame({task: {m: Metric(METRICS[task])(examples[m][task][0][index[task][b]],
                                                              examples[m][task][1][index[task][b]])
                                     for m in examples} for task in TASKS})
        values.append(compute_aggregates(table, reference="ref", aggregates="anrg")["anrg"])
    values = pd.DataFrame(values)
    for method in examples:
        assert (result.loc[method, "anrg_low"], result.loc[method, "anrg_high"]) == \
            pytest.approx(loop_quantiles(values[method].to_numpy()))


def test_aggregate_ci_is_paired_across_methods():
    examples = examples_for({"ref": 0.6, "other": 0.7}, TASKS)
    examples["twin"] = {task: (y, p.copy()) for task, (y, p) in examples["ref"].items()}
    result = bootstrap_aggregate_ci(examples, "top1", ["mnrg", "decathlon"], "ref", n_boot=300)
    assert result.loc["twin", ["mnrg", "mnrg_low", "mnrg_high"]].tolist() == [0.0, 0.0, 0.0]
    assert result.loc["twin", ["decathlon_reference_low", "decathlon_reference_high"]].tolist() == [0.0, 0.0]
    assert result.attrs["invalid_resamples"] == {"mnrg": 0, "decathlon_reference": 0}


def test_aggregate_ci_deterministic_and_independent_of_task_order():
    examples = examples_for({"ref": 0.6, "good": 0.8}, TASKS)
    reordered = {m: dict(reversed(list(per_task.items()))) for m, per_task in examples.items()}
    first = bootstrap_aggregate_ci(examples, "top1", "mean", n_boot=100, seed=11)
    again = bootstrap_aggregate_ci(reordered, "top1", "mean", n_boot=100, seed=11)
    np.testing.assert_allclose(first.to_numpy(), again.to_numpy())


def test_aggregate_ci_errors():
    examples = examples_for({"ref": 0.6, "good": 0.8}, TASKS)
    missing = {"ref": examples["ref"], "good": {"cub": examples["good"]["cub"]}}
    with pytest.raises(DataError, match=r"\(good, voc07\), \(good, pets\)"):
        bootstrap_aggregate_ci(missing, "top1", "mean")
    shuffled = {m: dict(per_task) for m, per_task in examples.items()}
    y, p = shuffled["good"]["cub"]
    shuffled["good"]["cub"] = (y[::-1], p)
    with pytest.raises(DataError, match="task 'cub': the test labels of 'good' differ"):
        bootstrap_aggregate_ci(shuffled, "top1", "mean")
    with pytest.raises(ConfigError, match="no metric for task 'voc07'"):
        bootstrap_aggregate_ci(examples, {"cub": "top1"}, "mean")
    with pytest.raises(UnknownNameError, match="reference 'resnet'"):
        bootstrap_aggregate_ci(examples, "top1", "mnrg", "resnet")
