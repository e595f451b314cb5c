"""Evaluation protocols over cached features: each turns a task's (train, val, sealed test) features into one
outcome. Protocols are registered by name (`linear`, `knn`, ...) and dispatched through the registry. Every
registered probe is a protocol under its own name (`ProbeProtocol`), and `unirep.fewshot` resolves its low-data
variants `<probe>-<k>shot` and `<probe>-1k`: a new probe needs no registration beyond `register_probe`.

A protocol only ever sees the test split sealed (`unirep.probes.SealedSplit`): hyperparameters are chosen
on val inside `Probe.select`, and the test split scores the selected probe once.

Protocols that train the network itself (fine-tuning) set `needs_images`: they get the task's images and the
backbone (`TaskImages`) instead of cached features, with the test images sealed the same way (`SealedImages`).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from omegaconf import DictConfig

from unirep.backbones.base import Backbone
from unirep.metrics import Metric
from unirep.probes import PROBES, FeatureSplit, Probe, SealedSplit, TestOutcome, _import_probes, create_probe
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
    # Where the features come from, for protocols that read more than features (zero-shot: the text tower and the
    # class names); None / empty when a caller builds TaskFeatures from arrays alone.
    task: str | None = None
    class_names: tuple[str, ...] = ()
    backbone: Backbone | None = None


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
        unlabelled.whole_image = getattr(images, "whole_image", False)  # resized as train images are (no crop)
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
    `needs_images`: `run` gets a TaskImages (images + backbone to train) instead of a TaskFeatures.
    `per_task = False`: the protocol's unit is not one task (OoD benchmarks span several): it has no (task, seed)
    jobs, and `evaluate` calls its `run_after_tasks` once, on global rank 0, after every task; it writes its own
    records (the `ood` protocol: `unirep ood`'s, under <out>/ood-records/)."""

    needs_source_logits = False
    needs_images = False
    per_task = True

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    def seeds(self) -> list[int]:
        """Seeds this protocol runs with (one record each)."""
        return list(self.cfg.seeds) if self.per_task else []

    def run(self, data: TaskFeatures | TaskImages, metric: Metric, seed: int) -> ProtocolOutcome:  # pragma: no cover
        raise NotImplementedError

    def run_after_tasks(self) -> None:
        """The work of a `per_task = False` protocol, with `self.cfg` (the run's resolved config)."""


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
    # Every registered probe is a protocol; families defined elsewhere register themselves (or a name resolver)
    # on import.
    register_probe_protocols()
    for module in PROTOCOL_MODULES:
        importlib.import_module(module)


# unirep.ood.protocol registers `ood`: unirep.ood sits above the protocols (it reads tasks, features and probes) and
# is reached from below only through this list, by name (tests/ood/test_ood_protocol.py checks that).
PROTOCOL_MODULES = ("unirep.fewshot", "unirep.finetune.protocol", "unirep.estimators.protocol", "unirep.zero_shot",
                    "unirep.ood.protocol", "unirep.prototypes.protocol", "unirep.detection.protocol")


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


def build_probe(name: str, cfg: DictConfig, *, multilabel: bool = False, fallback: bool = False) -> Probe:
    """The registered probe `name`, set up from the run config `cfg` by its `settings_from_config`.

    `multilabel`: the task is multi-label (scored by a ranking metric such as mAP); a probe that names a
    `multilabel_probe` hands over to it, with the settings that probe's constructor takes (the `linear` section's
    C grid and iteration budget go to `linear-multilabel`, its device does not). `fallback`: no val part to
    select on (1-shot): the probe's one fallback setting.

    Example:
        >>> build_probe("knn", cfg).ks  # the `knn` section's candidates
        [1, 3, 5, 10, 20, 50, 100, 200]
    """
    _import_probes()
    probe_class = PROBES.get(name)
    settings = probe_class.settings_from_config(cfg, fallback=fallback)
    if multilabel and probe_class.multilabel_probe is not None:
        name = probe_class.multilabel_probe
        accepted = set(PROBES.get(name)._get_param_names())  # scikit-learn's list of the constructor's arguments
        settings = {key: value for key, value in settings.items() if key in accepted}
    return create_probe(name, **settings)


class ProbeProtocol(Protocol):
    """The `<probe>` protocol of a registered probe: hyperparameters chosen on val (`Probe.select`), refit on
    train+val, scored once on the sealed test split. `linear` is Kornblith et al. 2019's L-BFGS logistic regression
    (C swept over the `linear` section's grid), `knn` DINO's weighted cosine vote (k chosen on val)."""

    def __init__(self, cfg: DictConfig, probe: str):
        super().__init__(cfg)
        self.probe = probe

    def run(self, data: TaskFeatures, metric: Metric, seed: int) -> ProtocolOutcome:
        probe = build_probe(self.probe, self.cfg, multilabel=metric.needs_scores)
        return _probe_outcome(probe, data, metric)


def probes_with_protocols() -> list[str]:
    """The registered probes that have `<probe>`, `<probe>-<k>shot` and `<probe>-1k` protocols."""
    _import_probes()
    return [name for name in PROBES.list() if PROBES.get(name).has_protocols]


def register_probe_protocols() -> None:
    """The `<probe>` protocol of every registered probe, under the probe's name (idempotent: probes registered
    later, e.g. by a plug-in or a test, get theirs on the next `create_protocol`)."""
    for name in probes_with_protocols():
        if name not in PROTOCOLS:
            PROTOCOLS.add(name, functools.partial(ProbeProtocol, probe=name))
