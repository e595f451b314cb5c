"""Bootstrap confidence intervals of OoD detection results over test examples: ID accuracy and the AUROC of every
OoD set, then the near / far means, from one record's per-example scores.

Resampling: the ID test set and each OoD test set are resampled separately (with replacement, each at its own size:
a stratified bootstrap, since the sets are drawn separately), with unirep's resample generator
(unirep.universality.bootstrap.iter_bootstrap_indices) and seeds fixed by (seed, benchmark, set). Two networks
scored on the same benchmark therefore see the same resampled test sets (paired), as the task-score intervals do.
A group mean (near, far) is the mean over its sets within each resample; intervals are percentile intervals.

AUROC of a resample is computed from resample *counts* without sorting again: with the OoD scores sorted once,
AUROC = Σ_i w_i (C(lo_i) + ½ (C(hi_i) − C(lo_i))) / (Σw · Σv), where w are the ID counts, v the OoD counts, C the
cumulative OoD counts in score order, lo_i / hi_i the number of OoD scores below / not above ID score i (ties count
one half, as in unirep.ood.metrics).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np

from unirep.universality.bootstrap import ConfidenceInterval, iter_bootstrap_indices


def resample_seed(seed: int, benchmark: str, set_key: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, zlib.crc32(f"{benchmark}|{set_key}".encode())])


def resample_counts(n: int, n_boot: int, seed: np.random.SeedSequence) -> np.ndarray:
    """(n_boot, n) counts: how often each example is drawn in each resample."""
    rows = []
    for index in iter_bootstrap_indices(n, n_boot, seed):
        offsets = (index.astype(np.int64) + np.arange(len(index))[:, None] * n).ravel()
        rows.append(np.bincount(offsets, minlength=len(index) * n).reshape(len(index), n))
    return np.concatenate(rows).astype(np.float64)


def resampled_auroc(id_scores: np.ndarray, ood_scores: np.ndarray, id_counts: np.ndarray,
                    ood_counts: np.ndarray) -> np.ndarray:
    """AUROC in percent of each resample (rows of the count matrices)."""
    order = np.argsort(ood_scores, kind="mergesort")
    sorted_ood = np.asarray(ood_scores, np.float64)[order]
    below = np.searchsorted(sorted_ood, id_scores, side="left")
    not_above = np.searchsorted(sorted_ood, id_scores, side="right")
    cumulative = np.zeros((len(ood_counts), len(sorted_ood) + 1))
    np.cumsum(ood_counts[:, order], axis=1, out=cumulative[:, 1:])
    wins = cumulative[:, below] + 0.5 * (cumulative[:, not_above] - cumulative[:, below])
    totals = id_counts.sum(axis=1) * ood_counts.sum(axis=1)
    return 100.0 * (id_counts * wins).sum(axis=1) / totals


def _interval(estimate: float, samples: np.ndarray, level: float) -> ConfidenceInterval:
    low, high = np.nanquantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return ConfidenceInterval(float(estimate), float(low), float(high), level, len(samples))


def ood_intervals(benchmark: str, id_scores: np.ndarray, ood_scores: Mapping[str, np.ndarray],
                  id_correct: np.ndarray | None, estimates: Mapping[str, float], n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95) -> dict[str, ConfidenceInterval]:
    """Intervals of `id_accuracy` (when `id_correct`, a 0/1 per ID test example, is given), of each OoD set's
    `auroc/<set>` and of the group means `auroc/near`, `auroc/far` (sets keyed `<group>/<name>`). `estimates` holds
    the point values (the record's, so an interval is always reported around the number the table shows)."""
    id_scores = np.asarray(id_scores, np.float64)
    id_counts = resample_counts(len(id_scores), n_boot, resample_seed(seed, benchmark, "id/test"))
    out: dict[str, ConfidenceInterval] = {}
    if id_correct is not None:
        accuracy = 100.0 * id_counts @ np.asarray(id_correct, np.float64) / id_counts.sum(axis=1)
        out["id_accuracy"] = _interval(estimates["id_accuracy"], accuracy, level)
    by_group: dict[str, list[np.ndarray]] = {}
    for key, values in ood_scores.items():
        values = np.asarray(values, np.float64)
        counts = resample_counts(len(values), n_boot, resample_seed(seed, benchmark, key))
        samples = resampled_auroc(id_scores, values, id_counts, counts)
        out[f"auroc/{key}"] = _interval(estimates[f"auroc/{key}"], samples, level)
        by_group.setdefault(key.split("/")[0], []).append(samples)
    for group, members in by_group.items():
        out[f"auroc/{group}"] = _interval(estimates[f"auroc/{group}"], np.mean(members, axis=0), level)
    return out


__all__ = ["ood_intervals", "resample_counts", "resample_seed", "resampled_auroc"]
