"""The linear probe's choice of C, and its test score, must not move when the features move by float32 noise
(another CPU, another BLAS): real features of the main job's flat-val-curve cases, perturbed by relative 1e-6
noise with several seeds, give the same C, val score and test score as the unperturbed features.

Cases (the cells that moved between an Intel and an AMD machine, and the README's Fashion-MNIST note), features
through the real backbones at the main job's 64 px: MobileNetV2 on sklearn-digits, raw pixels (32 px) on
sklearn-digits, MobileNetV2 on a textile-defects subset, and Fashion-MNIST's 28 x 28 pixels. Under the old rule
(`reselect_margin=None`: the choice on the loose sweep's scores) these perturbations moved C on the raw-pixel
and Fashion-MNIST cases on this machine (each case's comment says what moved).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from probe_data import Splits
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from unirep.backbones import create_backbone
from unirep.features import ExtractionSettings, extract_features
from unirep.metrics import Metric
from unirep.probes import FeatureSplit, SealedSplit
from unirep.probes.linear import LinearProbe
from unirep.probes.linear_problem import _Problem
from unirep.probes.linear_solution import _Solution
from unirep.probes.multinomial import linear
from unirep.probes.selection import penalty_bound
from unirep.tasks import create_task

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def _task_features(backbone: str, task: str, sizes: tuple[int, int, int] | None = None, **kwargs) -> Splits:
    """The task's train/val/test features through the real backbone (`sizes` images of each split, if given)."""
    model = create_backbone(backbone, **kwargs)
    card = create_task(task)
    arrays = []
    for split, size in zip(("train", "val", "test"), sizes or (None, None, None)):
        images = card.split(split)
        if size is not None and size < len(images):  # a seeded sample: the splits are stored class by class
            images = images.subset(np.sort(np.random.default_rng(0).permutation(len(images))[:size]))
        extracted = extract_features(model, images, ExtractionSettings(device="cpu"), description=f"{task}/{split}")
        arrays += [extracted.features, extracted.labels]
    return Splits(*arrays)


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


# case -> (features, metric, noise seeds). Seeds per case are few for time: the module took 272 s on the loaded
# 2-core box (load 5-6; extraction ~1/4 of it), each select 5-30 s; the raw-pixel case, where seed 0 flips the old
# rule's C, gets two draws.
# What the old rule did with these very draws on this machine is in the comment of each case.
CASES = {
    # old rule: C 0.1 with every seed here (seed 3 of the full task moved it to 0.178, test 94.83 -> 95.0)
    "mobilenetv2-sklearn-digits": (lambda: _task_features("mobilenetv2_100.packaged_in1k", "sklearn-digits",
                                                          input_size=64), Metric.TOP1, (0,)),
    # old rule: C 0.562 -> 0.316 with seed 0
    "raw-pixels-sklearn-digits": (lambda: _task_features("raw-pixels", "sklearn-digits", input_size=16),
                                  Metric.TOP1, (0, 1)),
    # old rule: unmoved on this subset; on the full task the test score moved at the same C (60.14 -> 59.79..59.96)
    "mobilenetv2-textile-defects": (lambda: _task_features("mobilenetv2_100.packaged_in1k", "textile-defects",
                                                           (400, 250, 300), input_size=64), Metric.MEAN_PER_CLASS,
                                    (0,)),
    # old rule: C 0.0178 -> 0.0562 with seed 0 (val 79.5 -> 79.75)
    "fashion-mnist-28px": (_fashion_pixels, Metric.TOP1, (0,)),
}


def _noisy(X: np.ndarray, seed: int | None) -> np.ndarray:
    """float32 rounding-scale noise: every entry times (1 + 1e-6 * N(0, 1))."""
    if seed is None:
        return X
    return (X * (1.0 + 1e-6 * np.random.default_rng(seed).standard_normal(X.shape))).astype(np.float32)


def select_and_test(splits: Splits, metric: Metric, noise_seed: int | None, **settings) -> tuple[LinearProbe, float]:
    probe = LinearProbe(**settings).select(FeatureSplit(_noisy(splits.X_train, noise_seed), splits.y_train),
                                           FeatureSplit(_noisy(splits.X_val, noise_seed), splits.y_val), metric)
    return probe, SealedSplit(_noisy(splits.X_test, noise_seed), splits.y_test).evaluate(probe, metric).score


_BUILT: dict[str, Splits] = {}


def _case_features(case: str) -> Splits:
    """A case's features, extracted once per test session (two tests use the textile case)."""
    if case not in _BUILT:
        _BUILT[case] = CASES[case][0]()
    return _BUILT[case]


@pytest.mark.parametrize("case", list(CASES))
def test_float32_noise_moves_neither_the_chosen_C_nor_the_test_score(case, one_torch_thread):
    _, metric, noise_seeds = CASES[case]
    splits = _case_features(case)
    reference, reference_test = select_and_test(splits, metric, None)
    record = reference.selected_params_
    assert record["C"] in record["reselected_Cs"] and record["tie_break"] == "smallest C"
    for seed in noise_seeds:
        probe, test = select_and_test(splits, metric, seed)
        assert (probe.selected_params_["C"], probe.val_score_, test) == (record["C"], reference.val_score_,
                                                                         reference_test), f"noise seed {seed}"


def test_chosen_C_val_score_is_the_exact_minimisers(digits, one_torch_thread):
    # Independent check of the certified score at the chosen C: scikit-learn solved tightly (float64, tol 1e-10)
    # gives the same val accuracy, and the probe says none of its val predictions was uncertain.
    probe, _ = select_and_test(digits, Metric.TOP1, None)
    C = probe.selected_params_["C"]
    assert probe.selected_params_["uncertain_val"] == 0
    scaler = StandardScaler().fit(digits.X_train.astype(np.float64))
    X_train, X_val = (scaler.transform(X.astype(np.float64)) for X in (digits.X_train, digits.X_val))
    reference = LogisticRegression(C=C, tol=1e-10, max_iter=100_000).fit(X_train, digits.y_train)
    assert probe.val_score_ == Metric.TOP1(digits.y_val, reference.predict(X_val))


def test_the_refit_is_the_tight_minimiser(digits, one_torch_thread):
    # The refit on train+val is solved to reselect_tol: its weights are scikit-learn's tight solution's.
    probe, _ = select_and_test(digits, Metric.TOP1, None)
    X_all = np.concatenate([digits.X_train, digits.X_val]).astype(np.float64)
    y_all = np.concatenate([digits.y_train, digits.y_val])
    scaler = StandardScaler().fit(X_all)
    reference = LogisticRegression(C=probe.selected_params_["C"], tol=1e-10, max_iter=100_000)
    reference.fit(scaler.transform(X_all), y_all)
    np.testing.assert_allclose(probe.coef_, reference.coef_, atol=1e-4 * np.abs(reference.coef_).max())
    torch.testing.assert_close(torch.as_tensor(probe.predict(digits.X_test)),
                               torch.as_tensor(reference.predict(scaler.transform(digits.X_test))))


def test_another_solver_path_to_the_same_minimisers_chooses_the_same(one_torch_thread):
    # Solving in the standardised space instead of the training rows' span (n = 400 < D = 1280) changes every
    # L-BFGS iterate, not the minimisers: the choice, its val score and the test score must not move. (An early
    # stop of the re-solves on the uncertainty estimate failed this on EfficientNet-Lite0's full textile task.)
    splits = _case_features("mobilenetv2-textile-defects")
    row_space, row_space_test = select_and_test(splits, Metric.MEAN_PER_CLASS, None)
    standardised, standardised_test = select_and_test(splits, Metric.MEAN_PER_CLASS, None, row_space=False)
    assert (standardised.selected_params_["C"], standardised.val_score_, standardised_test) == (
        row_space.selected_params_["C"], row_space.val_score_, row_space_test)


@pytest.mark.parametrize("C", [0.1, 1000.0])
def test_penalty_bound_covers_the_way_to_the_minimiser(digits, C):
    # A loose solution's val margins (its top-two classes) move, on the way to the exact minimiser (float64, tol
    # 1e-10), by no more than the penalty's strong-convexity bound, biases included; at small C the bound is tight
    # enough to certify most predictions, at C = 1000 it leaves none certain (the Cs that cannot win).
    problem = _Problem.build(digits.X_train, digits.y_train, np.unique(digits.y_train), torch.float64,
                             torch.device("cpu"))
    loose, _ = LinearProbe(dtype="float64", tol=1e-4, max_iter=100_000)._solve(problem, _Solution.zeros(problem), C)
    exact, _ = LinearProbe(dtype="float64", tol=1e-10, max_iter=100_000)._solve(problem, loose, C)
    l2 = 1.0 / (C * len(digits.y_train))
    val_X = problem.standardise(digits.X_val)
    loose_logits, exact_logits = linear(val_X, loose.W, loose.b), linear(val_X, exact.W, exact.b)
    top = loose_logits.topk(2, dim=1).indices
    margin = lambda logits: (logits.gather(1, top[:, :1]) - logits.gather(1, top[:, 1:])).squeeze(1)  # noqa: E731
    moved = (margin(exact_logits) - margin(loose_logits)).abs()
    bound = penalty_bound(val_X, loose.objective_at(l2)[1], loose.W.numel(), l2)
    assert bool((moved <= bound).all())
    certain = float((margin(loose_logits) > bound).double().mean())
    assert certain > 0.5 if C == 0.1 else certain == 0.0
