"""`run_ood(cfg)`: backbones x OoD benchmarks x scores -> one record each, resumable.

Per (backbone, benchmark): features of every task split the benchmark selects from come from the feature cache
(the same entries `unirep eval` uses); the classifier is unirep's linear probe with C chosen on the ID val split
(then refit on ID train + val, as the `linear` protocol does); each score fits its statistics on ID train and, when
it has hyperparameters, chooses them by AUROC of ID val against the benchmark's validation OoD set. Only then are
the ID test and the test OoD sets scored. Existing records are skipped unless `force`; a backbone is built and
features read only when a record is missing.

Why ID val can serve the choice although the probe was refit on it: it is the one ID split not scored at test; the
logits it gets are somewhat more confident than unseen data's, for every candidate alike (stated in each record's
`val_selection`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import MISSING, DictConfig

from unirep.config import LinearProbeConfig, save_config, to_container
from unirep.errors import ConfigError
from unirep.evaluate import build_backbone, checked_backbone_specs
from unirep.features import ExtractionSettings, FeatureCache
from unirep.fileio import atomic_write_text, ensure_writable_dir
from unirep.metrics import Metric
from unirep.ood import list_scores
from unirep.ood.benchmarks import OodBenchmark, create_benchmark, load_benchmark_card
from unirep.ood.metrics import CONVENTIONS, auroc, group_means, ood_metrics
from unirep.ood.records import OodRecord, existing_ood_record, ood_record_path, write_ood_record
from unirep.ood.scores import SCORES, FitData, LinearHead, OodScore, ScoreNotApplicable
from unirep.probes import FeatureSplit, create_probe
from unirep.runtime import library_versions

# linear: unirep's linear probe (C chosen on ID val); zero-shot: a clip: backbone's class-prompt head (nothing
# trained; the head MCM and GL-MCM need); none: feature-only scores, no head (and no ID accuracy).
CLASSIFIERS = ("linear", "zero-shot", "none")


@dataclass
class OodConfig:
    """`unirep ood`: backbones x benchmarks x scores. Extraction settings mean what they mean in `unirep eval`."""

    backbones: list[Any] = MISSING
    benchmarks: list[str] = MISSING
    scores: list[str] = field(default_factory=list)  # empty: every registered score the classifier allows
    classifier: str = "linear"
    out: str = "runs/ood"
    cache_dir: str = "~/.cache/unirep/features"
    max_input_size: int | None = 64
    batch_size: int = 128
    num_workers: int = 0
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = True
    force: bool = False
    linear: LinearProbeConfig = field(default_factory=LinearProbeConfig)


@dataclass
class BenchmarkFeatures:
    """Features, logits and labels of every set of one benchmark for one backbone."""

    features: dict[str, np.ndarray]
    logits: dict[str, np.ndarray | None]
    labels: dict[str, np.ndarray]
    head: LinearHead | None
    id_accuracy: float | None
    id_predictions: np.ndarray | None
    classifier_hyperparameters: dict
    seconds: dict[str, float]
    # What the scores fit on ID train and can share (one Gram matrix for Mahalanobis, RMDS and ViM): FitData.memo.
    fit_memo: dict = field(default_factory=dict, repr=False)


def checked_scores(cfg: DictConfig) -> list[str]:
    """The run's score names, each known and usable with its classifier, refused before any work."""
    if cfg.classifier not in CLASSIFIERS:
        raise ConfigError(f"classifier={cfg.classifier!r} is unknown: use one of {', '.join(CLASSIFIERS)}")
    names = list(cfg.scores) or [n for n in list_scores() if cfg.classifier != "none" or not SCORES.get(n).needs_head]
    for name in names:
        score = SCORES.get(name)  # unknown names raise with close-name suggestions
        if score.needs_head and cfg.classifier == "none":
            raise ConfigError(f"OoD score {name!r} reads logits, but classifier=none has no head: use "
                              "classifier=linear, or feature-only scores (mahalanobis, rmds, knn)")
    return names


def run_ood(cfg: DictConfig) -> list[OodRecord]:
    """Run (or resume) every (backbone, benchmark, score) of `cfg`; returns all its records, new and existing.

    Example:
        >>> cfg = load_config(OodConfig, dotlist=["backbones=[raw-pixels]", "benchmarks=[opencv-digits-ood]"])
        >>> records = run_ood(cfg)
    """
    settings = ExtractionSettings(batch_size=cfg.batch_size, num_workers=cfg.num_workers, device=cfg.device,
                                  precision=cfg.precision, channels_last=cfg.channels_last)
    cache = FeatureCache(cfg.cache_dir)
    specs = checked_backbone_specs(cfg)
    scores = checked_scores(cfg)
    cards = [load_benchmark_card(name) for name in cfg.benchmarks]
    out = ensure_writable_dir(cfg.out)
    records: list[OodRecord] = []
    pending: dict[tuple[int, str], list[str]] = {}
    for index, spec in enumerate(specs):
        for card in cards:
            paths = {s: ood_record_path(out, spec.display_name, card.name, cfg.classifier, s) for s in scores}
            existing = {s: None if cfg.force else existing_ood_record(p) for s, p in paths.items()}
            records.extend(r for r in existing.values() if r is not None)
            # A score found undefined on this backbone's features left a note instead of a record: not retried.
            done = {s for s, p in paths.items() if not cfg.force and skip_note(p).exists()}
            if missing := [s for s, r in existing.items() if r is None and s not in done]:
                pending[(index, card.name)] = missing
    # Every benchmark with work left is built (its card checked against the data) before any backbone runs.
    benchmarks = {card.name: create_benchmark(card.path) for card in cards if any(k[1] == card.name for k in pending)}
    if pending:
        save_config(cfg, out / "ood-config.yaml")
    versions = library_versions()
    for index, spec in enumerate(specs):
        backbone = None
        for card in cards:
            if (index, card.name) not in pending:
                continue
            backbone = backbone or build_backbone(spec, cfg)
            bench = benchmarks[card.name]
            data = benchmark_features(bench, backbone, cache, settings, cfg)
            for name in pending[(index, card.name)]:
                try:
                    record = score_record(name, bench, data, spec.display_name, backbone.identity(), cfg, versions)
                except ScoreNotApplicable as exc:
                    line = f"skipped {name} on {spec.display_name}/{bench.name}: {exc}"
                    print(f"unirep: {line}", file=sys.stderr)
                    atomic_write_text(skip_note(ood_record_path(out, spec.display_name, bench.name, cfg.classifier,
                                                                name)), line + "\n")
                    continue
                write_ood_record(out, record)
                records.append(record)
    return records


def skip_note(record_path: Path) -> Path:
    """Where a score that does not apply to a backbone's features says why (next to where its record would be)."""
    return record_path.with_suffix(".skipped")


def benchmark_features(bench: OodBenchmark, backbone, cache: FeatureCache, settings, cfg: DictConfig
                       ) -> BenchmarkFeatures:
    """Every set's features (from the cache), the classifier fitted on ID train/val, and every set's logits."""
    start = time.perf_counter()
    splits = {}
    for selection in bench.sets.values():
        where = (selection.task, selection.split)
        if where not in splits:
            task = bench.tasks[selection.task]
            splits[where] = cache.get_or_extract(backbone, task.manifest, selection.split,
                                                 task.split(selection.split), settings).features
    features = {key: splits[(s.task, s.split)][s.rows] for key, s in bench.sets.items()}
    labels = {key: s.labels for key, s in bench.sets.items()}
    seconds = {"extract_s": round(time.perf_counter() - start, 3)}
    start = time.perf_counter()
    head, accuracy, predictions, hyper = None, None, None, {}
    if cfg.classifier == "linear":
        from unirep.probes.linear import LinearProbe

        probe = create_probe("linear", **LinearProbe.settings_from_config(cfg))
        probe.select(FeatureSplit(features["id/train"], labels["id/train"]),
                     FeatureSplit(features["id/val"], labels["id/val"]), Metric.TOP1)
        head = LinearHead.from_probe(probe)
        predictions = probe.predict(features["id/test"])
        accuracy = Metric.TOP1(labels["id/test"], predictions)
        hyper = {**probe.selected_params_, "val_top1": probe.val_score_, "refit": "id train+val"}
    elif cfg.classifier == "zero-shot":
        from unirep.ood.clip_scores import zero_shot_ood_head  # open_clip only where a CLIP tower is used

        head = zero_shot_ood_head(backbone, bench, cache_dir=cfg.cache_dir)
        predictions = head.logits(features["id/test"]).argmax(axis=1)  # columns in ID label order
        accuracy = Metric.TOP1(labels["id/test"], predictions)
        hyper = {"template_set": head.template_set, "trained": "nothing: class-name prompts of the ID classes"}
    logits = {key: head.logits(x) if head is not None else None for key, x in features.items()}
    seconds["classifier_s"] = round(time.perf_counter() - start, 3)
    return BenchmarkFeatures(features, logits, labels, head, accuracy, predictions, hyper, seconds)


def select_and_setup(score_cls: type[OodScore], fit: FitData, val_id: tuple, val_ood: tuple
                     ) -> tuple[OodScore, list[dict]]:
    """The score fitted on ID train with the candidate of best val AUROC (ties: the earliest candidate)."""
    tried, best, best_auroc = [], None, -np.inf
    for params in score_cls.candidates(fit):
        score = score_cls(**params).setup(fit)
        value = auroc(score.score(*val_id), score.score(*val_ood))
        tried.append({"params": params, "val_auroc": value})
        if value > best_auroc:
            best, best_auroc = score, value
    return best, tried


def score_record(name: str, bench: OodBenchmark, data: BenchmarkFeatures, backbone: str, identity: dict,
                 cfg: DictConfig, versions: dict) -> OodRecord:
    start = time.perf_counter()
    score_cls = SCORES.get(name)
    fit = FitData(data.features["id/train"], data.labels["id/train"], data.head, memo=data.fit_memo)
    val_key = f"val/{bench.card.val.name}"

    def inputs(key: str) -> tuple:
        return data.features[key], data.logits[key]

    score, tried = select_and_setup(score_cls, fit, inputs("id/val"), inputs(val_key))
    id_scores = score.score(*inputs("id/test"))
    ood_scores = {key: score.score(*inputs(key)) for key in bench.test_set_keys()}
    per_set = {key: ood_metrics(id_scores, values) for key, values in ood_scores.items()}
    metrics = {"sets": per_set, **group_means(per_set, {key: key.split("/")[0] for key in per_set})}
    return OodRecord(
        backbone=backbone, benchmark=bench.name, classifier=cfg.classifier, ood_score=name, paper=score_cls.paper,
        hyperparameters=dict(score.params),
        val_selection={"val_ood_set": val_key, "id_set": "id/val", "metric": "auroc", "candidates": tried,
                       "fit_on": "id/train"},
        classifier_hyperparameters=data.classifier_hyperparameters, id_accuracy=data.id_accuracy, metrics=metrics,
        conventions={**CONVENTIONS, "score": "higher = more in-distribution"},
        benchmark_manifest=bench.summary(),
        timings={**data.seconds, "score_s": round(time.perf_counter() - start, 3)}, versions=versions,
        config=to_container(cfg), backbone_identity=identity,
        id_test_scores=_floats(id_scores), id_test_labels=data.labels["id/test"].tolist(),
        id_test_predictions=None if data.id_predictions is None else np.asarray(data.id_predictions).tolist(),
        ood_test_scores={key: _floats(values) for key, values in ood_scores.items()},
    )


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(values, np.float64)]


__all__ = ["CLASSIFIERS", "OodConfig", "benchmark_features", "checked_scores", "run_ood", "select_and_setup"]
