"""Time each training-free estimator against the linear probe's full C sweep on the same cached features.

Feature sets (all offline), covering both shapes the estimators' cost depends on:
  digits-raw32  N < D: unirep's `raw-pixels` backbone (32 px, 3,072-D) on the sklearn-digits task's train + val
                (1,197 images, 10 classes), through the real extraction pipeline.
  lfw-raw32     N < D: the same on lfw-faces (140 images, 2 classes).
  digits-mobilenetv2  N ~ D (not run by default): packaged MobileNetV2, 1,280-D, on sklearn-digits (1,197): the
                shape where an O(min(N, D)^3) eigendecomposition costs most against the probe.
  digits    N > D: sklearn digits pixels, 1797 x 64, 10 classes.
  fashion   Fashion-MNIST (Debian `dataset-fashion-mnist`), first N train images -> random-init timm resnet18 at
            32 px (seed 0, residual branches live), N x 512 penultimate features, 10 classes.
  gaussian  a 10-component Gaussian mixture, N x 256 (class means 1.0 apart per axis on average).

The probe reference is unirep's `create_probe("linear").select(train, val, top1)` (45 Cs, 10^linspace(-6, 5),
chosen on a 20 % val split, refit on train+val) when that probe is registered, else scikit-learn's lbfgs
LogisticRegression over the same 45 Cs, warm-started along the sweep, plus the refit; the output says which.
LEEP/NCE get synthetic (N, 1000) logits (an ImageNet-sized head) for timing only: none of these features has a
source head. Estimators score all N rows; the probe sees the same rows (80 % train / 20 % val). Probe and estimator
times are each the fastest of --repeats runs (timeit's rule: the slower runs measure the machine's load). Wall and
process-CPU seconds are both printed: on a shared machine the ratios move with the load, so quote them with the
load line printed first; `--threads 1` pins BLAS and torch to one thread on both sides (an oversubscribed machine makes
multi-threaded LAPACK calls many times slower). The last line lists the estimators under the 5x target.

Usage:
    .venv/bin/python benchmarks/estimators_vs_probe.py [--datasets digits-raw32 lfw-raw32 fashion] [--n 5000]
"""

from __future__ import annotations

import argparse
import gzip
import os
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from unirep.estimators import create_estimator, list_estimators
from unirep.metrics import Metric
from unirep.probes.linear import DEFAULT_CS

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CS = DEFAULT_CS  # the linear probe's own grid (machine-independent bits: unirep.probes.linear.c_grid)


def task_features(backbone_name: str, task_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Train + val features of a backbone on an offline task, as `unirep score` reads them."""
    from unirep.backbones import create_backbone
    from unirep.features import extract_features
    from unirep.tasks import create_task

    backbone, task = create_backbone(backbone_name), create_task(task_name)
    splits = [extract_features(backbone, task.split(split)) for split in ("train", "val")]
    return np.concatenate([s.features for s in splits]), np.concatenate([s.labels for s in splits])


def digits_features(n: int) -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    return X[:n].astype(np.float32), y[:n]


def gaussian_features(n: int, d: int = 256, n_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, n_classes, size=n)
    means = rng.normal(size=(n_classes, d))
    return (means[y] + rng.normal(size=(n, d)) * 3.0).astype(np.float32), y


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        return np.frombuffer(handle.read(), dtype=np.uint8, offset=offset)


def fashion_features(n: int) -> tuple[np.ndarray, np.ndarray]:
    import timm
    import torch
    import torch.nn.functional as F

    images = _read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)[:n]
    labels = _read_idx(FASHION_DIR / "train-labels-idx1-ubyte.gz", 8)[:n].astype(np.int64)
    torch.manual_seed(0)
    # zero_init_last=False: timm zeroes each block's last BN at init, which leaves a random ResNet's residual
    # branches dead and its features near-useless (a 25.7 % val probe); live branches give ~80 %.
    model = timm.create_model("resnet18", pretrained=False, num_classes=0, zero_init_last=False).eval()
    feats = []
    with torch.inference_mode():
        for start in range(0, n, 256):
            x = torch.from_numpy(images[start:start + 256].copy()).float().div(255.0)[:, None]
            x = F.interpolate(x, size=32, mode="bilinear", antialias=True).expand(-1, 3, -1, -1)
            feats.append(model((x - 0.5) / 0.5).numpy())
    return np.concatenate(feats), labels


FEATURE_SETS = {
    "digits-raw32": lambda n: task_features("raw-pixels", "sklearn-digits"),
    "lfw-raw32": lambda n: task_features("raw-pixels", "lfw-faces"),
    "digits-mobilenetv2": lambda n: task_features("mobilenetv2_100.packaged_in1k", "sklearn-digits"),
    "digits": digits_features,
    "fashion": fashion_features,
    "gaussian": gaussian_features,
}
TARGET_RATIO = 5.0


def sklearn_sweep(X_train, y_train, X_val, y_val) -> tuple[float, float]:
    """Best C on val by top-1 over the 45 Cs (warm-started), then refit on train+val; returns (C, val top-1)."""
    clf = LogisticRegression(C=CS[0], max_iter=1000, warm_start=True)
    scores = []
    for c in CS:
        clf.set_params(C=c).fit(X_train, y_train)
        scores.append(Metric.TOP1(y_val, clf.predict(X_val)))
    best = int(np.argmax(scores))
    LogisticRegression(C=CS[best], max_iter=1000).fit(np.vstack([X_train, X_val]), np.concatenate([y_train, y_val]))
    return float(CS[best]), float(scores[best])


class Timer:
    """Wall and process-CPU seconds: on a shared machine the CPU time is the steadier of the two."""

    def __enter__(self) -> Timer:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu


def probe_sweep(X: np.ndarray, y: np.ndarray, repeats: int = 1) -> tuple[str, Timer, float, float]:
    """(which implementation, fastest timer of `repeats`, selected C, val top-1) of the full sweep + refit on an
    80/20 split."""
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    try:
        from unirep.probes import FeatureSplit, create_probe

        create_probe("linear")
    except (ImportError, KeyError):
        timers = []
        for _ in range(repeats):
            with Timer() as timer:
                c, val = sklearn_sweep(X_train, y_train, X_val, y_val)
            timers.append(timer)
        return "sklearn LogisticRegression(lbfgs), 45 Cs warm-started + refit", min(timers, key=lambda t: t.wall), \
            c, val
    timers = []
    for _ in range(repeats):
        probe = create_probe("linear")
        with Timer() as timer:
            probe.select(FeatureSplit(X_train, y_train), FeatureSplit(X_val, y_val), Metric.TOP1)
        timers.append(timer)
    return "unirep create_probe('linear').select", min(timers, key=lambda t: t.wall), \
        float(probe.selected_params_.get("C", np.nan)), float(probe.val_score_)


def time_estimators(X: np.ndarray, y: np.ndarray, repeats: int) -> list[tuple[str, Timer, float]]:
    """Each estimator's fastest of `repeats` runs (by wall time), as timeit does: the other runs measure the
    machine's load, not the estimator."""
    logits = np.random.default_rng(0).normal(size=(len(X), 1000))
    rows = []
    configs = [(name, {}) for name in list_estimators()] + [("logme", {"variant": "reference"})]
    for name, kwargs in configs:
        estimator = create_estimator(name, **kwargs)
        timers = []
        for _ in range(repeats):
            with Timer() as timer:
                value = estimator.score(X, y, logits if estimator.needs_source_head else None)
            timers.append(timer)
        rows.append((name + ("[reference]" if kwargs else ""), min(timers, key=lambda t: t.wall), value))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = [name for name in FEATURE_SETS if name != "digits-mobilenetv2"]
    parser.add_argument("--datasets", nargs="+", default=default, choices=list(FEATURE_SETS))
    parser.add_argument("--n", type=int, default=5000, help="rows per feature set (digits has 1797)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing, probe and estimators (fastest kept)")
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads on both sides (default: library's)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    import torch
    from threadpoolctl import threadpool_limits

    if args.threads:  # torch's own pool too: on Intel CPUs the probe's products run in it (MKL, probe_blas)
        torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):
        run(args)


def run(args: argparse.Namespace) -> None:
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f} blas threads={args.threads or 'default'}")
    below_target = []
    for dataset in args.datasets:
        start = time.perf_counter()
        X, y = FEATURE_SETS[dataset](args.n)
        shape = "N < D" if len(X) < X.shape[1] else "N > D"
        print(f"\n== {dataset}: N={len(X)} D={X.shape[1]} ({shape}) classes={len(np.unique(y))} "
              f"(features in {time.perf_counter() - start:.1f}s)")
        which, probe, c, val = probe_sweep(X, y, args.repeats)
        print(f"probe: {which}: wall {probe.wall:.3f}s cpu {probe.cpu:.3f}s, C={c:.3g}, val top-1 {val:.1f}")
        print(f"{'estimator':<20}{'wall s':>9}{'cpu s':>9}{'probe/est wall':>16}{'probe/est cpu':>15}{'score':>11}")
        for name, timer, value in time_estimators(X, y, args.repeats):
            wall_ratio, cpu_ratio = probe.wall / timer.wall, probe.cpu / max(timer.cpu, 1e-6)
            print(f"{name:<20}{timer.wall:>9.3f}{timer.cpu:>9.3f}{wall_ratio:>15.1f}x{cpu_ratio:>14.1f}x{value:>11.4f}")
            if min(wall_ratio, cpu_ratio) < TARGET_RATIO:
                below_target.append(f"{dataset}/{name} ({min(wall_ratio, cpu_ratio):.1f}x)")
    print(f"\nbelow the {TARGET_RATIO:g}x target (min of wall and cpu ratio): {', '.join(below_target) or 'none'}")


if __name__ == "__main__":
    main()
