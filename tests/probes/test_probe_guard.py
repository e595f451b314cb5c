"""Choosing hyperparameters on test is impossible: the test split is sealed (no readable arrays, scored once,
only after selection), selection APIs refuse it, and permuting the test labels changes nothing chosen."""

from __future__ import annotations

import numpy as np
import pytest

from unirep.errors import DataError
from unirep.metrics import Metric
from unirep.probes import PROBES, FeatureSplit, SealedSplit, create_probe

SINGLE_LABEL_PROBES = ["linear", "knn"]
SMALL_SETTINGS = {"linear": {"Cs": [1e-3, 1e-1, 10.0]}, "knn": {"ks": [1, 5, 20]}}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def selected(name: str, splits) -> object:
    probe = create_probe(name, **SMALL_SETTINGS[name])
    return probe.select(FeatureSplit(splits.X_train, splits.y_train), FeatureSplit(splits.X_val, splits.y_val),
                        Metric.TOP1)


def test_single_label_probes_are_registered():
    create_probe("linear")  # imports the probe modules
    assert set(SINGLE_LABEL_PROBES) <= set(PROBES.list())


def test_sealed_split_has_no_readable_arrays(mixture):
    sealed = SealedSplit(mixture.X_test, mixture.y_test)
    for read in (np.asarray, np.array, lambda s: np.concatenate([s])):
        with pytest.raises(TypeError, match="sealed"):
            read(sealed)
    public = {name: value for name, value in vars(sealed).items() if not name.startswith("_SealedSplit__")}
    assert not any(isinstance(value, np.ndarray) for value in public.values())
    assert not hasattr(sealed, "X") and not hasattr(sealed, "y")
    assert len(sealed) == len(mixture.y_test)


@pytest.mark.parametrize("name", SINGLE_LABEL_PROBES)
def test_evaluate_needs_selection_and_runs_once(mixture, name):
    sealed = SealedSplit(mixture.X_test, mixture.y_test)
    fitted_only = create_probe(name).fit(mixture.X_train, mixture.y_train)
    with pytest.raises(RuntimeError, match="select"):
        sealed.evaluate(fitted_only, Metric.TOP1)
    probe = selected(name, mixture)
    outcome = sealed.evaluate(probe, Metric.TOP1)
    assert outcome.score == Metric.TOP1(mixture.y_test, probe.predict(mixture.X_test))
    with pytest.raises(RuntimeError, match="already scored"):
        sealed.evaluate(probe, Metric.TOP1)
    probe.fit(mixture.X_train, mixture.y_train)  # a plain fit after select is no longer a selected probe
    with pytest.raises(RuntimeError, match="select"):
        SealedSplit(mixture.X_test, mixture.y_test).evaluate(probe, Metric.TOP1)


@pytest.mark.parametrize("name", SINGLE_LABEL_PROBES)
def test_selection_refuses_a_sealed_split(mixture, name):
    sealed = SealedSplit(mixture.X_test, mixture.y_test)
    with pytest.raises(TypeError, match="sealed"):
        FeatureSplit(sealed, mixture.y_test)
    train = FeatureSplit(mixture.X_train, mixture.y_train)
    with pytest.raises(TypeError, match="never used for selection"):
        create_probe(name).select(train, sealed, Metric.TOP1)


@pytest.mark.parametrize("name", SINGLE_LABEL_PROBES)
def test_permuting_test_labels_changes_nothing_selected(mixture, name):
    outcomes = []
    for seed in (None, 1, 2):
        y_test = mixture.y_test if seed is None else np.random.default_rng(seed).permutation(mixture.y_test)
        probe = selected(name, mixture)
        outcomes.append((probe.selected_params_, probe.sweep_, SealedSplit(mixture.X_test, y_test).evaluate(
            probe, Metric.TOP1)))
    assert all(params == outcomes[0][0] and sweep == outcomes[0][1] for params, sweep, _ in outcomes)
    np.testing.assert_array_equal(outcomes[1][2].predictions, outcomes[0][2].predictions)
    assert outcomes[1][2].score < outcomes[0][2].score  # the test labels did change: only the score moved


@pytest.mark.parametrize("name", SINGLE_LABEL_PROBES)
def test_val_classes_missing_from_train_is_a_data_error(mixture, name):
    train = FeatureSplit(mixture.X_train[mixture.y_train != 3], mixture.y_train[mixture.y_train != 3])
    with pytest.raises(DataError, match="stratified"):
        create_probe(name).select(train, FeatureSplit(mixture.X_val, mixture.y_val), Metric.TOP1)


def test_non_finite_features_are_one_line_data_errors(mixture):
    X = mixture.X_test.copy()
    X[3, 0] = np.inf
    for build in (lambda: SealedSplit(X, mixture.y_test), lambda: FeatureSplit(X, mixture.y_test)):
        with pytest.raises(DataError) as error:
            build()
        message = str(error.value)
        assert "1 row(s)" in message and "NaN/Inf" in message and "\n" not in message


@pytest.mark.parametrize("name", SINGLE_LABEL_PROBES)
def test_multi_label_targets_are_a_data_error(mixture, name):
    targets = np.eye(6, dtype=np.int8)[mixture.y_train]
    with pytest.raises(DataError, match="linear-multilabel"):
        create_probe(name).fit(mixture.X_train, targets)
