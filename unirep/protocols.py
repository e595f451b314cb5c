"""Evaluation protocols over cached features: each turns a task's (train, val, sealed test) features into one
outcome. Protocols are registered by name (`linear`, `knn`, ...) and dispatched through the registry.

A protocol only ever sees the test split sealed (`unirep.probes.SealedSplit`): hyperparameters are chosen
on val inside `Probe.select`, and the test split scores the selected probe once.

Protocols that train the network itself (fine-tuning) set `needs_images`: they get the task's images and the
backbone (`TaskImages`) instead of cached features, with the test images sealed the same way (`SealedImages`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from omegaconf import DictConfig

from unirep.backbones.base import Backbone
from unirep.metrics import Metric
from unirep.probes import FeatureSplit, SealedSplit, TestOutcome, create_probe
from unirep.registry import Registry
from unirep.tasks.base import ImageSet


@dataclass
class TaskFeatures:
    """One task's features for one backbone. `source_logits` holds train/val logits when extracted."""

    train: FeatureSplit
    val: FeatureSplit
    test: SealedSplit
    source_logits: dict[str, np.ndarray] = field(default_factory=dict)
    ids: dict[str, list[str]] = field(default_factory=dict)  # example ids of train/val (manifest order)


class SealedImages:
    """The test images of an images protocol. Only `evaluate` reads them, once, after selection; the model's
    `predict` sees the images with every label replaced by -1, so test labels cannot reach training code."""

    def __init__(self, images: ImageSet):
        self.__images = images
        self._evaluated = False

    def __len__(self) -> int:
        return len(self.__images)

    def evaluate(self, predict: Callable[[ImageSet], np.ndarray], metric: Metric) -> TestOutcome:
        """Score `predict(images) -> (N, C) class scores` on the test split, once."""
        if self._evaluated:
            raise RuntimeError("this test split was already scored once; build a new run instead of re-scoring")
        self._evaluated = True
        images = self.__images
        unlabelled = ImageSet(images.ids, np.full(len(images), -1), lambda i: images[i][0])
        scores = np.asarray(predict(unlabelled))
        predictions = scores if metric.needs_scores else scores.argmax(axis=1)
        labels = np.asarray(images.labels)
        return TestOutcome(score=metric(labels, predictions), predictions=predictions, labels=labels.copy())


@dataclass
class TaskImages:
    """One task's images and the backbone, for protocols that train the network (`Protocol.needs_images`).

    `backbone` is shared with the task's other protocols: a protocol copies it before training it.
    """

    train: ImageSet
    val: ImageSet
    test: SealedImages
    backbone: Backbone
    num_classes: int


@dataclass
class ProtocolOutcome:
    """What a protocol measured: `score` on test (percent for probes), `val_score` of the selected setting."""

    metric: str
    score: float
    val_score: float | None
    hyperparameters: dict
    test_labels: list | None = None
    test_predictions: list | None = None
    extra: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)  # seconds per phase, merged into the record's timings


class Protocol:
    """Base class. `needs_source_logits`: the protocol uses the backbone's source-classifier logits.
    `needs_images`: `run` gets a TaskImages (images + backbone to train) instead of a TaskFeatures."""

    needs_source_logits = False
    needs_images = False

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    def seeds(self) -> list[int]:
        """Seeds this protocol runs with (one record each)."""
        return list(self.cfg.seeds)

    def run(self, data: TaskFeatures | TaskImages, metric: Metric, seed: int) -> ProtocolOutcome:  # pragma: no cover
        raise NotImplementedError


PROTOCOLS: Registry[type[Protocol]] = Registry("protocol")
register_protocol = PROTOCOLS.register


def create_protocol(name: str, cfg: DictConfig) -> Protocol:
    """Build the protocol `name` with the run config `cfg` (its section for the protocol is read).

    Example:
        >>> create_protocol("linear-5shot", cfg).seeds()
        [0, 1, 2]
    """
    _import_protocols()
    return PROTOCOLS.get(name)(cfg)


def _import_protocols() -> None:
    # Protocol families defined elsewhere register themselves (or a name resolver) on import.
    for module in PROTOCOL_MODULES:
        importlib.import_module(module)


PROTOCOL_MODULES = ("unirep.fewshot", "unirep.finetune.protocol", "unirep.estimators.protocol")


def _probe_outcome(probe, data: TaskFeatures, metric: Metric) -> ProtocolOutcome:
    probe.select(data.train, data.val, metric)
    test = data.test.evaluate(probe, metric)
    return ProtocolOutcome(
        metric=metric.value,
        score=float(test.score),
        val_score=float(probe.val_score_),
        hyperparameters=dict(probe.selected_params_),
        test_labels=test.labels.tolist(),
        test_predictions=test.predictions.tolist(),
        extra={"val_sweep": {str(k): float(v) for k, v in probe.sweep_.items()}},
    )


@register_protocol("linear")
class LinearProtocol(Protocol):
    """L-BFGS multinomial logistic regression; C swept on val over 10^linspace(c_min_exp, c_max_exp, n_c),
    then refit on train+val and scored once on test (Kornblith et al. 2019)."""

    def run(self, data: TaskFeatures, metric: Metric, seed: int) -> ProtocolOutcome:
        c = self.cfg.linear
        Cs = np.logspace(c.c_min_exp, c.c_max_exp, c.n_c)
        if metric.needs_scores:  # multi-label task scored by mAP: one-vs-rest logistic regression per class
            probe = create_probe("linear-multilabel", Cs=Cs, max_iter=c.max_iter)
        else:
            probe = create_probe("linear", Cs=Cs, max_iter=c.max_iter, device=c.device)
        return _probe_outcome(probe, data, metric)


@register_protocol("knn")
class KNNProtocol(Protocol):
    """Cosine kNN with DINO's weighted vote (exp(sim/T)); k chosen on val, then train+val as the index."""

    def run(self, data: TaskFeatures, metric: Metric, seed: int) -> ProtocolOutcome:
        probe = create_probe("knn", ks=list(self.cfg.knn.ks), temperature=self.cfg.knn.temperature)
        return _probe_outcome(probe, data, metric)
