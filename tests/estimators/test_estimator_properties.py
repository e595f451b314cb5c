"""Properties every registered estimator must have: relabelling invariance, the scale invariance it declares,
informative features beating shuffled labels, and one-line errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from unirep.errors import DataError, UnknownNameError
from unirep.estimators import ESTIMATORS, Estimator, create_estimator, list_estimators, score_estimators

NAMES = list_estimators()
# What each estimator is meant to be invariant to when the features are multiplied by a constant.
EXPECTED_SCALE_INVARIANT = {"logme", "hscore", "hscore-shrinkage", "nleep", "leep", "nce", "rankme", "alpha-req", "nc1"}
LABEL_FREE = {"rankme", "alpha-req"}
WITHOUT_HEAD = ["alpha-req", "hscore", "hscore-shrinkage", "logme", "nc1", "nleep", "rankme"]


def test_registry_lists_every_estimator_with_its_flags():
    assert set(NAMES) == {"logme", "hscore", "hscore-shrinkage", "nleep", "leep", "nce", "rankme", "alpha-req", "nc1"}
    assert list_estimators(source_head_available=False) == WITHOUT_HEAD
    for name in NAMES:
        assert ESTIMATORS.get(name).name == name
        assert ESTIMATORS.get(name).label_free == (name in LABEL_FREE)
    assert create_estimator("logme", variant="reference").identity() == {
        "name": "logme", "variant": "reference", "max_iter": None, "tol": None,
    }
    assert not create_estimator("logme", variant="reference").scale_invariant


def test_score_estimators_scores_what_applies(blobs):
    X, y, logits = blobs
    without_head = score_estimators(X, y)
    assert sorted(without_head) == WITHOUT_HEAD
    assert without_head["logme"] == create_estimator("logme").score(X, y)
    assert sorted(score_estimators(X, y, logits)) == NAMES
    with pytest.raises(DataError, match="backbone vit_x has no source classification head"):
        score_estimators(X, y, names=["leep"], backbone="vit_x")


def test_unknown_estimator_suggests_close_names():
    with pytest.raises(UnknownNameError, match="did you mean logme"):
        create_estimator("logm")


@pytest.mark.parametrize("name", NAMES)
def test_relabelling_classes_changes_nothing(blobs, name):
    X, y, logits = blobs
    relabel = np.array([7, 2, 9, 4])  # a permutation of the classes onto other ids
    estimator = create_estimator(name)
    assert estimator.score(X, relabel[y], logits) == pytest.approx(estimator.score(X, y, logits), rel=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_declared_scale_invariance_holds(blobs, name):
    X, y, logits = blobs
    estimator = create_estimator(name)
    assert estimator.scale_invariant == (name in EXPECTED_SCALE_INVARIANT)
    base = estimator.score(X, y, logits)
    for factor in (1e-3, 37.0):
        assert estimator.score(factor * X, y, logits) == pytest.approx(base, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_informative_features_beat_shuffled_labels(blobs, name):
    X, y, logits = blobs
    shuffled = np.random.default_rng(0).permutation(y)
    estimator = create_estimator(name)
    if estimator.label_free:  # what it measures is the features alone: the labels must change nothing
        assert estimator.score(X, shuffled, logits) == estimator.score(X, y, logits)
    else:
        assert estimator.score(X, y, logits) > estimator.score(X, shuffled, logits)


@pytest.mark.parametrize("name", NAMES)
def test_score_with_details_gives_the_score(blobs, name):
    X, y, logits = blobs
    estimator = create_estimator(name)
    value, details = estimator.score_with_details(X, y, logits)
    assert value == estimator.score(X, y, logits)
    assert isinstance(details, dict)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_raises_one_line_data_errors(blobs, name):
    X, y, logits = blobs
    estimator: Estimator = create_estimator(name)
    bad_x = X.copy()
    bad_x[3, 1] = np.inf
    cases = [
        ((bad_x, y, logits), "NaN/Inf"),
        ((X, y[:-1], logits), "labels must have shape"),
        ((X, y.astype(float), logits), "integer class ids"),
        ((X, np.zeros_like(y), logits), "at least 2 classes"),
        ((X[:, :, None], y, logits), r"\(N, D\) array"),
    ]
    for args, match in cases:
        with pytest.raises(DataError, match=match) as info:
            estimator.score(*args)
        assert "\n" not in str(info.value)
