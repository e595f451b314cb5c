"""Shared data of the OoD score tests: real images (scikit-learn's digits) through a fixed random ReLU layer, so the
features are non-negative like pooled CNN features (ASH and ReAct assume that) and of full rank (Mahalanobis-type
scores invert their covariance). Digits 0-5 are ID (train / test), 6-9 the OoD set; the head is unirep's linear
probe fitted on ID train."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.datasets import load_digits

from unirep.ood import FitData, LinearHead
from unirep.probes.linear import LinearProbe


@dataclass
class ScoreData:
    train: np.ndarray
    train_labels: np.ndarray
    test: np.ndarray
    ood: np.ndarray
    probe: LinearProbe
    head: LinearHead

    @property
    def fit(self) -> FitData:
        return FitData(self.train, self.train_labels, self.head)

    def logits(self, features: np.ndarray) -> np.ndarray:
        return self.head.logits(features)


@pytest.fixture(scope="session")
def score_data() -> ScoreData:
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    projection = rng.normal(size=(64, 40)) / 8
    features = np.maximum(X / 16 @ projection + 0.05, 0).astype(np.float32)
    order = rng.permutation(len(y))
    features, y = features[order], y[order]
    id_rows, ood_rows = np.flatnonzero(y < 6), np.flatnonzero(y >= 6)
    train, test = id_rows[:700], id_rows[700:]
    probe = LinearProbe(C=1.0).fit(features[train], y[train])
    return ScoreData(features[train], y[train], features[test], features[ood_rows[:400]], probe,
                     LinearHead.from_probe(probe))
