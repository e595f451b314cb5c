"""The linear probe's choice of C, and its test score, must not move when the features move by float32 noise
(another CPU, another BLAS): features perturbed by relative 1e-6 noise, several seeds, on real flat-val-curve
cases. Without the rule (`reselect_margin=None`) these perturbations flipped the outcome on this machine: on the
digits case the test score (same C = 10, 95.98 vs 95.77: the loose refit lands elsewhere), on the Fashion-MNIST
case the C itself (0.018 / 0.056 / 0.1 over 8 seeds, test 80.7 / 80.0)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from probe_data import Splits
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from unirep.metrics import Metric
from unirep.probes import FeatureSplit, SealedSplit
from unirep.probes.linear import LinearProbe

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def _digits_pixels() -> Splits:
    """sklearn's digits, 8 x 8 raw pixels, shuffled with seed 1: 900 train / 400 val / 497 test."""
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(1).permutation(len(y))
    X, y = X[order].astype(np.float32), y[order]
    return Splits(X[:900], y[:900], X[900:1300], y[900:1300], X[1300:], y[1300:])


def _read_idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3])]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def _fashion_pixels() -> Splits:
    """The first 2,000 official Fashion-MNIST train images, 28 x 28 raw pixels: 600 train / 400 val / 1000 test."""
    images, labels = FASHION_DIR / "train-images-idx3-ubyte.gz", FASHION_DIR / "train-labels-idx1-ubyte.gz"
    if not (images.is_file() and labels.is_file()):
        pytest.skip(f"Fashion-MNIST IDX files not under {FASHION_DIR} (apt-get install dataset-fashion-mnist)")
    X = _read_idx(images)[:2000].reshape(2000, -1).astype(np.float32)
    y = _read_idx(labels)[:2000].astype(np.int64)
    return Splits(X[:600], y[:600], X[600:1000], y[600:1000], X[1000:], y[1000:])


def _select_and_test(splits: Splits, noise_seed: int | None) -> tuple[LinearProbe, float]:
    rng = np.random.default_rng(noise_seed)

    def noisy(X: np.ndarray) -> np.ndarray:  # float32 rounding-scale noise: relative 1e-6 on every entry
        return X if noise_seed is None else (X * (1.0 + 1e-6 * rng.standard_normal(X.shape))).astype(np.float32)

    train, val = FeatureSplit(noisy(splits.X_train), splits.y_train), FeatureSplit(noisy(splits.X_val), splits.y_val)
    probe = LinearProbe().select(train, val, Metric.TOP1)
    return probe, SealedSplit(noisy(splits.X_test), splits.y_test).evaluate(probe, Metric.TOP1).score


# Noise draws per case: a full select costs ~1 s on digits and ~10 s on Fashion-MNIST (loaded 2-core box).
@pytest.mark.parametrize(("case", "seeds"), [(_digits_pixels, (0, 1, 2)), (_fashion_pixels, (0, 1))],
                         ids=["sklearn-digits-8px", "fashion-mnist-28px"])
def test_float32_noise_moves_neither_the_chosen_C_nor_the_test_score(case, seeds, one_torch_thread):
    splits = case()
    reference, reference_test = _select_and_test(splits, None)
    record = reference.selected_params_
    assert record["C"] in record["reselected_Cs"] and record["tie_break"] == "smallest C"
    for seed in seeds:
        probe, test = _select_and_test(splits, seed)
        assert (probe.selected_params_["C"], test) == (record["C"], reference_test), f"noise seed {seed}"
        assert probe.val_score_ == reference.val_score_


def test_chosen_C_val_score_is_the_exact_minimisers(one_torch_thread):
    # Independent check of the re-solved score at the chosen C: scikit-learn solved tightly (float64, tol 1e-7,
    # the exact minimiser's choice) gives the same val accuracy.
    splits = _digits_pixels()
    probe, _ = _select_and_test(splits, None)
    C = probe.selected_params_["C"]
    scaler = StandardScaler().fit(splits.X_train.astype(np.float64))
    X_train, X_val = (scaler.transform(X.astype(np.float64)) for X in (splits.X_train, splits.X_val))
    reference = LogisticRegression(C=C, tol=1e-7, max_iter=100_000).fit(X_train, splits.y_train)
    assert probe.val_score_ == Metric.TOP1(splits.y_val, reference.predict(X_val))
