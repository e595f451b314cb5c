"""Small real feature sets shared by the probe tests (imported by conftest.py and test modules)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Splits:
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def gaussian_mixture(n_per_class: int, n_classes: int = 6, dim: int = 16, seed: int = 0, spread: float = 1.6):
    """Overlapping classes around random centres, with a shared offset so cosine != euclidean geometry."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(size=(n_classes, dim)) + 2.0
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = centres[y] + spread * rng.normal(size=(len(y), dim))
    order = rng.permutation(len(y))
    return X[order].astype(np.float32), y[order]
