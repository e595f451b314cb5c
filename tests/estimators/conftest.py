"""Small seeded data for the estimator tests: Gaussian blobs (informative features) and matching source logits."""

from __future__ import annotations

import numpy as np
import pytest


def make_blobs(n: int = 240, d: int = 12, n_classes: int = 4, separation: float = 2.0, seed: int = 0):
    """Features whose class means differ along random directions, plus source logits (K = 7) that carry label
    information through a fixed class -> source-label map, the way an ImageNet head carries it for related data."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    means = rng.normal(size=(n_classes, d)) * separation
    X = means[y] + rng.normal(size=(n, d))
    source_of_class = rng.integers(0, 7, size=n_classes)
    logits = rng.normal(size=(n, 7))
    logits[np.arange(n), source_of_class[y]] += 3.0
    return X, y, logits


@pytest.fixture(scope="session")
def blobs():
    return make_blobs()
