"""Bootstrap CIs of OoD metrics from a record's per-example test scores (no re-run), with unirep's bootstrap.

The resamples are `unirep.universality`'s: `iter_bootstrap_indices` rows (n draws with replacement), one stream per
set seeded by `task_resample_seed(seed, "<benchmark>:<set>")`, and percentile intervals as there (numpy's linear
quantiles of the resampled values). The ID test set and each OoD set are resampled apart, each keeping its size
(the sets are fixed-size samples of different sources). Because the seeds depend on the benchmark and the set only,
every score and every backbone on a benchmark is scored on the same resamples (paired, as unirep's task CIs are);
a near / far mean is the mean over its sets of the same resamples, so its interval is the mean's own.

Example:
    >>> cis = record_intervals(record, n_boot=1000)
    >>> cis["near"]["auroc"].low, cis["far/texture-patches"]["fpr95_id_recall"].high
"""

from __future__ import annotations

import numpy as np

from unirep.ood.metrics import resampled_ood_metrics
from unirep.ood.records import OodRecord
from unirep.universality import ConfidenceInterval, bootstrap_task_ci, iter_bootstrap_indices, task_resample_seed

INTERVAL_METRICS = ("auroc", "fpr95_id_recall")  # what the leaderboard shows (FPR95: OoD accepted at 95 % ID recall)
ROWS_PER_CHUNK = 100  # resamples scored at once: (rows x examples) float arrays stay a few MB


class ResampleCache:
    """The resample counts of each (benchmark, set, size, n_boot, seed): drawn once per build, shared by every
    record of that benchmark (they are the same draws by construction)."""

    def __init__(self):
        self._counts: dict[tuple, np.ndarray] = {}

    def counts(self, benchmark: str, key: str, n: int, n_boot: int, seed: int) -> np.ndarray:
        """(n_boot, n) int32: how often each example is drawn in each resample."""
        where = (benchmark, key, n, n_boot, seed)
        if where not in self._counts:
            stream = task_resample_seed(seed, f"{benchmark}:{key}")
            index = np.concatenate(list(iter_bootstrap_indices(n, n_boot, stream)))
            offsets = (np.arange(n_boot, dtype=np.int64) * n)[:, None]
            self._counts[where] = np.bincount((index + offsets).ravel(), minlength=n_boot * n).reshape(
                n_boot, n).astype(np.int32)
        return self._counts[where]


def record_intervals(record: OodRecord, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                     metrics: tuple[str, ...] = INTERVAL_METRICS, cache: ResampleCache | None = None
                     ) -> dict[str, dict[str, ConfidenceInterval]]:
    """{set key ("near/<name>", "far/<name>") or group ("near", "far"): {metric: CI}} of one record, in percent;
    also "id_accuracy" ({"top1": CI}) when the record has ID predictions.

    The point estimates are the record's own metrics (recomputed from its per-example scores: the same numbers)."""
    cache = cache or ResampleCache()
    id_scores = np.asarray(record.id_test_scores, np.float64)
    id_counts = cache.counts(record.benchmark, "id/test", len(id_scores), n_boot, seed)
    samples: dict[str, dict[str, np.ndarray]] = {}
    for key, values in record.ood_test_scores.items():
        ood_scores = np.asarray(values, np.float64)
        ood_counts = cache.counts(record.benchmark, key, len(ood_scores), n_boot, seed)
        parts = [resampled_ood_metrics(id_scores, ood_scores, id_counts[i:i + ROWS_PER_CHUNK],
                                       ood_counts[i:i + ROWS_PER_CHUNK], metrics)
                 for i in range(0, n_boot, ROWS_PER_CHUNK)]
        samples[key] = {m: np.concatenate([p[m] for p in parts]) for m in metrics}
    out: dict[str, dict[str, ConfidenceInterval]] = {}
    for key, by_metric in samples.items():
        out[key] = {m: _interval(record.metrics["sets"][key][m], s, level, n_boot) for m, s in by_metric.items()}
    for group in dict.fromkeys(key.split("/")[0] for key in samples):
        members = [k for k in samples if k.split("/")[0] == group]
        out[group] = {m: _interval(record.metrics[group][m], np.mean([samples[k][m] for k in members], axis=0),
                                   level, n_boot) for m in metrics}
    if record.id_test_predictions is not None:
        out["id_accuracy"] = {"top1": bootstrap_task_ci(
            record.id_test_labels, record.id_test_predictions, "top1", n_boot=n_boot, level=level,
            seed=task_resample_seed(seed, f"{record.benchmark}:id/test"))}
    return out


def _interval(estimate: float, samples: np.ndarray, level: float, n_boot: int) -> ConfidenceInterval:
    low, high = np.nanquantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return ConfidenceInterval(float(estimate), float(low), float(high), level, n_boot,
                              int((~np.isfinite(samples)).sum()))


__all__ = ["INTERVAL_METRICS", "ResampleCache", "record_intervals"]
