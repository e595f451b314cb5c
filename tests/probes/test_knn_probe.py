"""KNNProbe against an independent implementation of DINO's weighted vote (sklearn brute-force cosine
neighbours + numpy), k selection on val with ties to the smaller k, and the train+val index after selection."""

from __future__ import annotations

import numpy as np
import pytest
from probe_data import gaussian_mixture
from sklearn.neighbors import NearestNeighbors

from unirep.errors import ConfigError, DataError
from unirep.metrics import Metric
from unirep.probes import FeatureSplit, create_probe
from unirep.probes.knn import KNNProbe


def reference_votes(X_index, y_index, X_query, k: int, T: float) -> tuple[np.ndarray, np.ndarray]:
    """(votes, classes): sum over the k most cosine-similar index rows of exp(sim / T), per class."""
    classes = np.unique(y_index)
    search = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(X_index.astype(np.float64))
    distances, neighbours = search.kneighbors(X_query.astype(np.float64))
    weights = np.exp((1.0 - distances) / T)
    votes = np.zeros((len(X_query), len(classes)))
    for column in range(k):
        np.add.at(votes, (np.arange(len(X_query)), np.searchsorted(classes, y_index[neighbours[:, column]])),
                  weights[:, column])
    return votes, classes


@pytest.mark.parametrize(("k", "T"), [(1, 0.07), (5, 0.07), (20, 0.07), (20, 0.5), (60, 0.02)])
def test_weighted_vote_matches_reference(mixture, k, T):
    probe = KNNProbe(k=k, temperature=T).fit(mixture.X_train, mixture.y_train)
    votes, classes = reference_votes(mixture.X_train, mixture.y_train, mixture.X_test, k, T)
    np.testing.assert_array_equal(probe.predict(mixture.X_test), classes[votes.argmax(axis=1)])
    np.testing.assert_allclose(probe.decision_scores(mixture.X_test), votes, rtol=2e-5)


def test_k_selected_on_val_then_index_holds_train_and_val(mixture):
    train, val = FeatureSplit(mixture.X_train, mixture.y_train), FeatureSplit(mixture.X_val, mixture.y_val)
    probe = create_probe("knn", ks=[200, 1, 5, 20, 50]).select(train, val, Metric.TOP1)
    assert list(probe.sweep_) == [1, 5, 20, 50, 200]
    for k, score in probe.sweep_.items():
        votes, classes = reference_votes(train.X, train.y, val.X, k, 0.07)
        assert score == Metric.TOP1(val.y, classes[votes.argmax(axis=1)])
    best = max(probe.sweep_.values())
    chosen = min(k for k, score in probe.sweep_.items() if score == best)
    assert probe.selected_params_ == {"k": chosen, "T": 0.07}
    assert probe.val_score_ == best
    assert probe.index_.ntotal == len(train.y) + len(val.y)
    X_all, y_all = np.concatenate([train.X, val.X]), np.concatenate([train.y, val.y])
    votes, classes = reference_votes(X_all, y_all, mixture.X_test, chosen, 0.07)
    np.testing.assert_array_equal(probe.predict(mixture.X_test), classes[votes.argmax(axis=1)])


def test_ties_go_to_the_smaller_k_and_candidates_are_capped():
    # Far-apart clusters: every k up to the class size classifies val perfectly; k > n_train is capped.
    X_train, y_train = gaussian_mixture(10, n_classes=3, seed=0, spread=0.05)
    X_val, y_val = gaussian_mixture(5, n_classes=3, seed=1, spread=0.05)
    probe = KNNProbe(ks=[3, 1, 5, 100, 200]).select(FeatureSplit(X_train, y_train), FeatureSplit(X_val, y_val),
                                                     Metric.TOP1)
    assert list(probe.sweep_) == [1, 3, 5, 30]
    assert probe.sweep_[1] == probe.sweep_[5] == 100.0
    assert probe.selected_params_["k"] == 1


def test_mean_per_class_and_string_labels(mixture):
    labels = np.array(["cat", "dog", "eel", "fox", "gnu", "hen"])
    train = FeatureSplit(mixture.X_train, labels[mixture.y_train])
    val = FeatureSplit(mixture.X_val, labels[mixture.y_val])
    probe = KNNProbe(ks=[5, 20]).select(train, val, Metric.MEAN_PER_CLASS)
    assert set(probe.predict(mixture.X_test)) <= set(labels)
    k = probe.selected_params_["k"]
    votes, classes = reference_votes(train.X, train.y, val.X, k, 0.07)
    assert probe.val_score_ == Metric.MEAN_PER_CLASS(val.y, classes[votes.argmax(axis=1)])


def test_zero_rows_and_bad_input(mixture):
    X = mixture.X_test.copy()
    X[0] = 0.0  # similarity 0 to everything, not a division error
    scores = KNNProbe(k=5).fit(mixture.X_train, mixture.y_train).decision_scores(X)
    assert np.isfinite(scores).all()
    X[1, 2] = np.nan
    with pytest.raises(DataError, match="NaN") as error:
        KNNProbe(k=5).fit(mixture.X_train, mixture.y_train).decision_scores(X)
    assert "\n" not in str(error.value)
    # scikit-learn's n_features_in_ refusal, as a one-line DataError that is also a ValueError
    with pytest.raises(DataError, match="X has 4 features, but KNNProbe is expecting 16 features") as error:
        KNNProbe(k=5).fit(mixture.X_train, mixture.y_train).predict(mixture.X_test[:, :4])
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize("settings", [{"temperature": 0.0}, {"ks": []}, {"ks": [0, 5]}, {"k": 0}])
def test_bad_settings_raise_config_error(mixture, settings):
    with pytest.raises(ConfigError):
        KNNProbe(**settings).fit(mixture.X_train, mixture.y_train)
