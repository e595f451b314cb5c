"""Vectorised bootstrap CIs vs the plain per-resample loop (same index matrices, same numbers).

Target: 1000 resamples of a 10k-example test set well under a second, and a large ratio over the loop
(`Metric(y[idx], p[idx])` per resample), for top-1 and mean per-class accuracy.

    .venv/bin/python benchmarks/bootstrap.py [--n 10000] [--n-boot 1000] [--loop-boot 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from unirep.metrics import Metric
from unirep.universality import bootstrap_aggregate_ci, bootstrap_task_ci, iter_bootstrap_indices


def seconds(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--loop-boot", type=int, default=100, help="resamples timed for the loop (then scaled)")
    parser.add_argument("--classes", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    y = rng.integers(0, args.classes, args.n)
    p = np.where(rng.random(args.n) < 0.75, y, rng.integers(0, args.classes, args.n))
    for metric in (Metric.TOP1, Metric.MEAN_PER_CLASS):
        ours = seconds(lambda m=metric: bootstrap_task_ci(y, p, m, n_boot=args.n_boot))

        def loop(m=metric):
            for index in iter_bootstrap_indices(args.n, args.loop_boot, 0):
                for row in index:
                    m(y[row], p[row])

        reference = seconds(loop, repeat=1) * args.n_boot / args.loop_boot
        print(f"{metric.value:15s} n={args.n} n_boot={args.n_boot}: vectorised {ours:.3f}s, loop {reference:.2f}s "
              f"(scaled from {args.loop_boot}), ratio {reference / ours:.0f}x")
    targets = (rng.random((args.n // 2, 20)) < 0.1).astype(int)  # a VOC07-sized multi-label test set
    scores = rng.normal(size=targets.shape) + targets
    for metric in (Metric.MAP, Metric.MAP_VOC07):
        ours = seconds(lambda m=metric: bootstrap_task_ci(targets, scores, m, n_boot=args.n_boot), repeat=1)
        start = time.perf_counter()
        for index in iter_bootstrap_indices(len(targets), args.loop_boot // 10, 0):
            for row in index:
                metric(targets[row], scores[row])
        reference = (time.perf_counter() - start) * args.n_boot / (args.loop_boot // 10)
        print(f"{metric.value:15s} n={len(targets)} x 20 classes n_boot={args.n_boot}: vectorised {ours:.3f}s, loop "
              f"{reference:.2f}s (scaled from {args.loop_boot // 10}), ratio {reference / ours:.0f}x")
    tasks = {f"task{t}": y for t in range(10)}
    examples = {f"method{m}": {t: (labels, np.roll(p, m)) for t, labels in tasks.items()} for m in range(10)}
    taken = seconds(lambda: bootstrap_aggregate_ci(examples, "top1", ["mean", "mnrg", "borda", "zscore"], "method0",
                                                   n_boot=args.n_boot), repeat=1)
    print(f"aggregate CI, 10 methods x 10 tasks x {args.n} examples, {args.n_boot} resamples, 4 aggregates: "
          f"{taken:.2f}s")


if __name__ == "__main__":
    main()
