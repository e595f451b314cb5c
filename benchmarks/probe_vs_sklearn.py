"""Time unirep's LinearProbe (full C sweep on val + refit on train+val) against the same protocol run with
scikit-learn's LogisticRegression(lbfgs, warm_start=True), on the same features, in the same process.

Cases (all offline):
  fashion20k  REAL features: Fashion-MNIST (Debian `dataset-fashion-mnist`) first 20k official-train images
              (16k train / 4k val) + the 10k official test images, through a random-init timm resnet18
              (seed 0, zero_init_last=False so the residual branches are live) at 32 px -> 512-D, 10 classes.
              Features are cached under --cache-dir after the first run.
  gmm50k      SYNTHETIC: a 100-class Gaussian mixture, 40k train / 10k val / 10k test, 512-D.

Both sides get the same float32 features, the same standardisation (train stats for the sweep, train+val stats
for the refit), the same Cs (swept in ascending order, each solve warm-started from the previous C), the same
stopping rule (max |gradient| of sklearn's scaled objective <= tol) and the same max_iter; ties in val accuracy
go to the smaller C on both sides, and both refits warm-start from the selected C's solution. Timings are
wall-clock seconds of sweep + refit; the machine may be shared, so the ratio (both run back to back in one
process) is the number to quote, not the absolute times.

Accuracy is also compared with scikit-learn solved tightly (tol 1e-7, the exact minimiser's choice; not timed):
the loose scikit-learn sweep's near-best Cs (val within --tight-band points of its best, plus unirep's choice) are
re-solved at tol 1e-7 from their loose solutions, the best (ties to the smaller C) is refitted at tol 1e-7. Cs
far below the best cannot win and are not re-solved (a full 45-C sweep at 1e-7 takes hours at large C).
unirep's selection re-solves its own near-best Cs to tol 1e-7 (LinearProbe's module docstring) inside its timing.

Both sides run on --threads threads (default 1: the development box is shared, and oversubscribed OpenMP
barriers otherwise swamp both timings; pass 0 to keep the libraries' defaults).

Usage:
    .venv/bin/python benchmarks/probe_vs_sklearn.py            # both cases, full 45-C grid
    .venv/bin/python benchmarks/probe_vs_sklearn.py --quick    # small smoke version (seconds)
    .venv/bin/python benchmarks/probe_vs_sklearn.py --cases gmm50k --max-iter 100 --every 2
"""

from __future__ import annotations

import argparse
import gzip
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from unirep.fileio import atomic_save_npz
from unirep.metrics import Metric
from unirep.probes import FeatureSplit, SealedSplit, create_probe
from unirep.probes.linear import DEFAULT_CS

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class Case:
    name: str
    description: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3])]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def _resnet18_features(images: np.ndarray) -> np.ndarray:
    import timm
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=0, zero_init_last=False).eval()
    features = []
    with torch.inference_mode():
        for start in range(0, len(images), 256):
            x = torch.from_numpy(images[start : start + 256].copy()).float().div(255.0)[:, None]
            x = F.interpolate(x, size=32, mode="bilinear").expand(-1, 3, -1, -1)
            features.append(model((x - 0.5) / 0.5).numpy())
    return np.concatenate(features)


def fashion_case(n_train: int, n_val: int, n_test: int, cache_dir: Path) -> Case:
    cache = cache_dir / f"fashion_resnet18rand32_{n_train + n_val}_{n_test}.npz"
    if cache.exists():
        arrays = dict(np.load(cache))
    else:
        print(f"extracting Fashion-MNIST features once (cached at {cache}) ...", flush=True)
        train_images = _read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz")[: n_train + n_val]
        test_images = _read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")[:n_test]
        arrays = {
            "X": _resnet18_features(train_images),
            "y": _read_idx(FASHION_DIR / "train-labels-idx1-ubyte.gz")[: n_train + n_val].astype(np.int64),
            "X_test": _resnet18_features(test_images),
            "y_test": _read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")[:n_test].astype(np.int64),
        }
        atomic_save_npz(cache, **arrays)
    X, y = arrays["X"], arrays["y"]
    return Case(
        "fashion20k", f"REAL Fashion-MNIST -> random-init resnet18 @32px, {X.shape[1]}-D, 10 classes",
        X[:n_train], y[:n_train], X[n_train:], y[n_train:], arrays["X_test"], arrays["y_test"],
    )


def gaussian_case(n_train: int, n_val: int, n_test: int, dim: int = 512, n_classes: int = 100) -> Case:
    rng = np.random.default_rng(0)
    # Low-rank class means plus isotropic noise: classes overlap, so the accuracy depends on C.
    means = rng.normal(size=(n_classes, 32)) @ rng.normal(size=(32, dim)) / np.sqrt(32) * 0.18

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, n_classes, size=n)
        return (means[y] + rng.normal(size=(n, dim)) + 3.0).astype(np.float32), y

    (X_train, y_train), (X_val, y_val), (X_test, y_test) = draw(n_train), draw(n_val), draw(n_test)
    return Case("gmm50k", f"SYNTHETIC Gaussian mixture, {dim}-D, {n_classes} classes", X_train, y_train, X_val,
                y_val, X_test, y_test)


def run_unirep(
    case: Case, Cs: np.ndarray, max_iter: int, tol: float, precondition: bool = True
) -> tuple[float, float, float, dict]:
    start = time.perf_counter()
    probe = create_probe("linear", Cs=Cs, max_iter=max_iter, tol=tol, precondition=precondition)
    probe.select(FeatureSplit(case.X_train, case.y_train), FeatureSplit(case.X_val, case.y_val), Metric.TOP1)
    seconds = time.perf_counter() - start
    test = SealedSplit(case.X_test, case.y_test).evaluate(probe, Metric.TOP1).score
    return seconds, test, probe.selected_params_["C"], {"iterations": sum(probe.sweep_n_iter_.values()),
                                                        "re-solved Cs": len(probe.selected_params_.get(
                                                            "reselected_Cs", []))}


def run_sklearn(case: Case, Cs: np.ndarray, max_iter: int, tol: float, tight_band: float | None = None,
                also: float | None = None, loose: dict | None = None) -> tuple[float, float, float, dict]:
    """The same protocol written the usual scikit-learn way (what ssl-transfer's linear eval does). With
    `tight_band`, the near-best Cs (and `also`) are then re-solved at tol 1e-7 and the choice is made on those
    (the tight reference; its time is not the one compared). `loose`: the loose sweep's state, filled by the first
    call and reused by the tight one."""
    start = time.perf_counter()
    loose = {} if loose is None else loose
    if not loose:
        scaler = StandardScaler().fit(case.X_train)
        X_train, X_val = scaler.transform(case.X_train), scaler.transform(case.X_val)
        model = LogisticRegression(C=1.0, max_iter=max_iter, tol=tol, warm_start=True)
        sweep, solutions, iterations = {}, {}, 0
        for C in np.sort(Cs):
            model.set_params(C=float(C)).fit(X_train, case.y_train)
            sweep[float(C)] = Metric.TOP1(case.y_val, model.predict(X_val))
            solutions[float(C)] = (model.coef_.copy(), model.intercept_.copy())
            iterations += int(model.n_iter_[0])
        loose.update(X_train=X_train, X_val=X_val, sweep=dict(sweep), solutions=dict(solutions),
                     iterations=iterations)
    X_train, X_val, iterations = loose["X_train"], loose["X_val"], loose["iterations"]
    sweep, solutions = dict(loose["sweep"]), dict(loose["solutions"])
    model = LogisticRegression(C=1.0, max_iter=max_iter, tol=tol, warm_start=True)
    best = max(sweep, key=lambda C: (sweep[C], -C))  # ties -> smaller C, as unirep
    if tight_band is not None:
        near = sorted(C for C in sweep if sweep[C] >= sweep[best] - tight_band or np.isclose(C, also or -1.0))
        model.set_params(tol=1e-7, max_iter=max(max_iter, 10_000))
        for C in near:
            model.set_params(C=C)
            model.coef_, model.intercept_ = solutions[C]
            model.fit(X_train, case.y_train)
            sweep[C] = Metric.TOP1(case.y_val, model.predict(X_val))
            solutions[C] = (model.coef_.copy(), model.intercept_.copy())
            iterations += int(model.n_iter_[0])
        best = max(near, key=lambda C: (sweep[C], -C))
    X_all = np.concatenate([case.X_train, case.X_val])
    scaler_all = StandardScaler().fit(X_all)
    model.set_params(C=best)
    model.coef_, model.intercept_ = solutions[best]  # warm-start the refit from the selected solution
    model.fit(scaler_all.transform(X_all), np.concatenate([case.y_train, case.y_val]))
    seconds = time.perf_counter() - start
    test = Metric.TOP1(case.y_test, model.predict(scaler_all.transform(case.X_test)))
    return seconds, test, best, {"iterations": iterations}


def run_unirep_plain(case: Case, Cs: np.ndarray, max_iter: int, tol: float) -> tuple[float, float, float, dict]:
    """Ablation: unirep's solver without the curvature preconditioner (plain L-BFGS, as sklearn)."""
    return run_unirep(case, Cs, max_iter, tol, precondition=False)


def compare(case: Case, Cs: np.ndarray, max_iter: int, tol: float, ablation: bool, tight_band: float) -> None:
    print(f"\n== {case.name}: {case.description}")
    print(f"   train {case.X_train.shape} / val {len(case.y_val)} / test {len(case.y_test)}; {len(Cs)} Cs in "
          f"[{Cs.min():.0e}, {Cs.max():.0e}], max_iter={max_iter}, tol={tol:g}; load avg {_load()}", flush=True)
    results: dict[str, tuple] = {}
    loose_sklearn: dict = {}
    runners: dict[str, Callable] = {"unirep": run_unirep, "sklearn": partial(run_sklearn, loose=loose_sklearn)}
    if ablation:
        runners["unirep-noprecond"] = run_unirep_plain
    for name, runner in runners.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # both sides hit max_iter at large C alike
            results[name] = runner(case, Cs, max_iter, tol)
        seconds, test, C, info = results[name]
        _print_result(name, *results[name])
    if tight_band >= 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            results["sklearn-tight"] = run_sklearn(case, Cs, max_iter, tol, tight_band, also=results["unirep"][2],
                                                   loose=loose_sklearn)
        _print_result("sklearn tol 1e-7", *results["sklearn-tight"], timed=False)
    (ours, ours_test, _, _), (theirs, theirs_test, _, _) = results["unirep"], results["sklearn"]
    print(f"   accuracy difference (unirep - sklearn): {ours_test - theirs_test:+.2f} pt"
          + (f", (unirep - sklearn tol 1e-7): {ours_test - results['sklearn-tight'][1]:+.2f} pt"
             if "sklearn-tight" in results else "")
          + f"; speed ratio (sklearn time / unirep time): {theirs / ours:.2f}x", flush=True)


def _print_result(name: str, seconds: float, test: float, C: float, info: dict, timed: bool = True) -> None:
    took = f"sweep+refit {seconds:8.1f} s" if timed else f"(tight part) {seconds:7.1f} s"
    print(f"   {name:16s} {took}   test top1 {test:6.2f}   selected C {C:.3g}   L-BFGS iterations "
          f"{info['iterations']}" + (f"   re-solved Cs {info['re-solved Cs']}" if "re-solved Cs" in info else ""),
          flush=True)


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke version: 2k/0.5k/1k rows, 12 Cs")
    parser.add_argument("--cases", nargs="+", default=["fashion20k", "gmm50k"], choices=["fashion20k", "gmm50k"])
    parser.add_argument("--max-iter", type=int, default=1000, help="L-BFGS iterations per C, both sides")
    parser.add_argument("--tol", type=float, default=1e-4, help="gradient tolerance, both sides (sklearn's tol)")
    parser.add_argument("--every", type=int, default=1, help="use every n-th C of the 45-C grid, both sides")
    parser.add_argument("--ablation", action="store_true", help="also time unirep without its preconditioner")
    parser.add_argument("--tight-band", type=float, default=1.0,
                        help="val points below scikit-learn's best within which its Cs are re-solved at tol 1e-7 "
                             "(the tight reference); negative: skip the tight reference")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for both sides (torch, BLAS, OpenMP); 0 keeps the libraries' defaults")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "unirep" / "benchmarks")
    args = parser.parse_args()
    Cs = DEFAULT_CS[:: 4 if args.quick else args.every]
    if args.threads:
        # Equal footing on a shared machine: oversubscribed OpenMP barriers otherwise dominate both timings.
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), sklearn {sklearn.__version__} "
          f"(BLAS/OpenMP threads: {args.threads or 'default'}); unirep LinearProbe float32 on cpu, sklearn "
          "LogisticRegression(lbfgs) on the same float32 features")
    builders = {
        "fashion20k": lambda: fashion_case(*((2000, 500, 1000) if args.quick else (16000, 4000, 10000)),
                                           args.cache_dir),
        "gmm50k": lambda: gaussian_case(*((2000, 500, 1000) if args.quick else (40000, 10000, 10000))),
    }
    for name in args.cases:
        compare(builders[name](), Cs, args.max_iter, args.tol, args.ablation, args.tight_band)


if __name__ == "__main__":
    main()
