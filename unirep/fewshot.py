"""Low-data protocols: k-shot per class and VTAB-1k-style 800/200 subsets of a task's training data.

Names are resolved by pattern from the probe registry, so every registered probe gets them for free:
`linear-5shot`, `knn-10shot`, `linear-1k`, and `<probe>-<k>shot` / `<probe>-1k` for a probe added later.
Each seed draws its own subset from the train split (k-shot) or train+val pool (1k); hyperparameters are
chosen on a val part carved out of that same budget, never from test. The subset's example ids are
returned so the run writes them as a manifest: every subset is reproducible and identical across backbones
(it depends on the labels and the seed only), which makes backbone comparisons paired.
"""

from __future__ import annotations

import functools
import re

import numpy as np
from omegaconf import DictConfig
from scipy import stats

from unirep.errors import DataError
from unirep.fileio import sha256_json
from unirep.metrics import Metric
from unirep.probes import FeatureSplit
from unirep.protocols import (
    PROTOCOLS,
    Protocol,
    ProtocolOutcome,
    TaskFeatures,
    _probe_outcome,
    build_probe,
    probes_with_protocols,
)

# `<probe>-<k>shot` or `<probe>-1k`; a probe name may contain hyphens, the anchored suffix is split off.
LOW_DATA_NAME = re.compile(r"^(?P<base>.+)-(?:(?P<shots>\d+)shot|(?P<vtab>1k))$")


def kshot_indices(labels: np.ndarray, shots: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`shots` examples of every class, split per class into train and a val part of
    max(1, round(val_fraction * shots)) examples (none when shots == 1)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    n_val = 0 if shots == 1 else max(1, int(round(val_fraction * shots)))
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < shots:
            raise DataError(f"class {int(cls)} has {len(members)} training examples, fewer than {shots} shots; "
                            "use fewer shots")
        chosen = rng.choice(members, size=shots, replace=False)
        val.extend(chosen[:n_val])
        train.extend(chosen[n_val:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))


def vtab_indices(n_pool: int, n_train: int, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """VTAB-1k: a seeded random draw of n_train + n_val examples from the pool, the first n_train for training."""
    if n_pool < n_train + n_val:
        raise DataError(f"the task has {n_pool} train+val examples, fewer than the {n_train}+{n_val} a 1k subset "
                        "needs; use a k-shot protocol instead")
    order = np.random.default_rng(seed).permutation(n_pool)
    return np.sort(order[:n_train]), np.sort(order[n_train:n_train + n_val])


class LowDataProtocol(Protocol):
    """Runs a registered probe (`linear`, `knn`, ...) on a k-shot or 1k subset, once per few-shot seed."""

    def __init__(self, cfg: DictConfig, base: str, shots: int | None):
        super().__init__(cfg)
        self.base, self.shots = base, shots

    def seeds(self) -> list[int]:
        return list(self.cfg.fewshot.seeds)

    def run(self, data: TaskFeatures, metric: Metric, seed: int) -> ProtocolOutcome:
        fs = self.cfg.fewshot
        if self.shots is None:
            pool_X = np.concatenate([data.train.X, data.val.X])
            pool_y = np.concatenate([data.train.y, data.val.y])
            pool_ids = data.ids.get("train", []) + data.ids.get("val", [])
            train_idx, val_idx = vtab_indices(len(pool_y), fs.vtab_train, fs.vtab_val, seed)
        else:
            pool_X, pool_y, pool_ids = data.train.X, data.train.y, data.ids.get("train", [])
            train_idx, val_idx = kshot_indices(pool_y, self.shots, fs.val_fraction, seed)
        subset = {"train": [pool_ids[i] for i in train_idx] if pool_ids else train_idx.tolist(),
                  "val": [pool_ids[i] for i in val_idx] if pool_ids else val_idx.tolist()}
        train = FeatureSplit(pool_X[train_idx], pool_y[train_idx])
        if len(val_idx):
            probe = self._probe(fallback=False)
            val = FeatureSplit(pool_X[val_idx], pool_y[val_idx])
        else:  # one shot: nothing to validate on, so the one fallback setting is "selected" trivially
            probe = self._probe(fallback=True)
            val = train
        data_subset = TaskFeatures(train=train, val=val, test=data.test)
        outcome = _probe_outcome(probe, data_subset, metric)
        if not len(val_idx):
            outcome.val_score = None
            outcome.extra["validation"] = "none: one example per class, fallback hyperparameters used"
        outcome.hyperparameters.update({"shots": self.shots or "1k", "subset_seed": seed})
        outcome.extra["subset"] = subset
        outcome.extra["subset_digest"] = sha256_json(subset)
        return outcome

    def _probe(self, fallback: bool):
        return build_probe(self.base, self.cfg, fallback=fallback)


def mean_ci(values: list[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Mean over seeds and the half-width of its Student-t confidence interval (0 for a single seed)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), 0.0
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(half)


def low_data_protocol_patterns() -> list[str]:
    """What `unirep list protocols` shows for the low-data family: `<probe>-<k>shot` and `<probe>-1k` per probe."""
    return [f"{probe}-{suffix}" for suffix in ("<k>shot", "1k") for probe in probes_with_protocols()]


def resolve_low_data_protocol(name: str):
    """`<probe>-<k>shot` (k >= 1) or `<probe>-1k` of a registered probe -> its protocol factory; else None."""
    match = LOW_DATA_NAME.match(name)
    if not match or match["base"] not in probes_with_protocols():
        return None
    shots = int(match["shots"]) if match["shots"] else None
    if shots is not None and shots < 1:
        return None
    return functools.partial(LowDataProtocol, base=match["base"], shots=shots)


PROTOCOLS.add_fallback(resolve_low_data_protocol)
