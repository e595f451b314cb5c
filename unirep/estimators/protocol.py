"""Training-free transferability estimators as evaluation protocols: `unirep eval --protocols logme,leep` (or
`unirep score`) writes one record per (backbone, task, estimator, seed) with the same schema as the probes.

Every registered estimator gets a protocol of the same name. It scores the labelled target data available
before test, train + val features (and train + val source logits for LEEP/NCE), concatenated in manifest order;
the sealed test split is never opened, so the record has no test predictions. The record's `metric` is the
estimator's name and `score` its raw value (not a percent: the leaderboard lists it without aggregating it),
`val_score` is None (nothing is selected), and `hyperparameters` / `extra["estimator"]` hold the estimator's
identity (name and settings).

The features come from the pipeline's feature cache, so an estimator run after (or with) a probe on the same
backbone and task costs no forward pass. Estimators that read the source classifier (`needs_source_head`)
set `needs_source_logits`; the pipeline skips them, with a message, on backbones without a source head.

Example:
    >>> cfg = load_config(EvalConfig, dotlist=["backbones=[raw-pixels]", "tasks=[sklearn-digits]",
    ...                                        "protocols=[linear,logme,hscore]"])
    >>> records = evaluate(cfg)  # linear and the two estimators share one extraction
"""

from __future__ import annotations

import functools

import numpy as np
from omegaconf import DictConfig

from unirep.estimators import ESTIMATORS, create_estimator, list_estimators
from unirep.estimators.base import Estimator
from unirep.metrics import Metric
from unirep.protocols import PROTOCOLS, Protocol, ProtocolOutcome, TaskFeatures

# Splits an estimator reads: the labelled data a user has before touching test.
SCORED_SPLITS = ("train", "val")


class EstimatorProtocol(Protocol):
    """Scores the estimator `estimator` on the train + val features of a task (test stays sealed).

    Estimators with a `seed` parameter (NLEEP's subsample and GMM initialisation) get the run's seed; the
    others are deterministic and record it only as the record's seed.
    """

    def __init__(self, cfg: DictConfig, estimator: str):
        super().__init__(cfg)
        self.estimator = estimator
        self.needs_source_logits = ESTIMATORS.get(estimator).needs_source_head

    def build_estimator(self, seed: int) -> Estimator:
        estimator = create_estimator(self.estimator)
        if "seed" in estimator.get_params():
            estimator.set_params(seed=seed)
        return estimator

    def run(self, data: TaskFeatures, metric: Metric, seed: int) -> ProtocolOutcome:
        estimator = self.build_estimator(seed)
        features = np.concatenate([data.train.X, data.val.X])
        labels = np.concatenate([data.train.y, data.val.y])
        logits = None
        if self.needs_source_logits and all(s in data.source_logits for s in SCORED_SPLITS):
            logits = np.concatenate([data.source_logits[s] for s in SCORED_SPLITS])
        # Without logits a source-head estimator raises its own one-line DataError naming the fix.
        value, details = estimator.score_with_details(features, labels, logits)
        identity = estimator.identity()
        return ProtocolOutcome(
            metric=self.estimator,
            score=float(value),
            val_score=None,
            hyperparameters=identity,
            extra={"estimator": identity, "scored_splits": list(SCORED_SPLITS), "n_scored": int(len(labels)),
                   **({"details": details} if details else {})},
        )


def register_estimator_protocols() -> None:
    """One protocol per registered estimator, under the estimator's name (idempotent)."""
    for name in list_estimators():
        if name not in PROTOCOLS:
            PROTOCOLS.add(name, functools.partial(EstimatorProtocol, estimator=name))


def estimator_protocols(*, source_head_available: bool = True) -> list[str]:
    """Protocol names of the estimators (all, or only those that need no source head)."""
    register_estimator_protocols()
    return list_estimators(source_head_available=source_head_available)


register_estimator_protocols()
