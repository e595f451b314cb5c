"""Fixtures for the probe tests: sklearn's digits pixels (real images, 64-D) and a Gaussian mixture
(continuous, so nearest-neighbour orders have no ties)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from probe_data import Splits, gaussian_mixture
from sklearn.datasets import load_digits


@pytest.fixture(scope="session")
def digits() -> Splits:
    """1797 digits, shuffled once: 900 train / 400 val / 497 test, float32 like cached features."""
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    X, y = X[order].astype(np.float32), y[order]
    return Splits(X[:900], y[:900], X[900:1300], y[900:1300], X[1300:], y[1300:])


@pytest.fixture(scope="session")
def mixture() -> Splits:
    X_train, y_train = gaussian_mixture(100, seed=0)
    X_val, y_val = gaussian_mixture(40, seed=1)
    X_test, y_test = gaussian_mixture(50, seed=2)
    return Splits(X_train, y_train, X_val, y_val, X_test, y_test)


@pytest.fixture
def one_torch_thread():
    """Tiny problems run fastest on one thread; on a shared, oversubscribed CI box OpenMP barriers between
    two threads cost more than the maths. Restored afterwards so other tests see the default."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
