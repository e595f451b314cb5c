"""Does fine-tuning improve OoD detection? `run_study(cfg)`: backbones x OoD benchmarks x fine-tuning strategies
(unirep.studies.networks: frozen + linear probe, CLIP zero-shot, full fine-tuning, LP-FT, WiSE-FT over an α grid)
x every OoD score, one record per (network, benchmark, score) in unirep.ood's fixed schema, resumable.

    unirep ood-study configs/ood/finetune-study.yaml

Per (backbone, benchmark): the ID task is the benchmark's (its ID classes; ID train optionally subsampled,
`max_train`); each strategy's networks are fine-tuned on ID train and selected on ID val; every network's features
of every benchmark set are extracted once (feature cache, keyed by the network's identity: the fine-tuned and
interpolated networks have a weights id of their own) and every score is computed by unirep.ood's own record code
(`score_record`: statistics fitted on ID train, hyperparameters chosen on ID val vs the validation OoD set, then
ID test and the test OoD sets scored once). The classifier is the network's own head (`own-head`, `wise-head`),
or for the frozen network unirep's linear probe (`linear`). Each record's `classifier_hyperparameters` says which
strategy, seed, α and fine-tuning choices made the network.

Resuming: records that exist are skipped; a network whose records all exist is not built; fine-tuned weights are
read back from `<out>/networks/`; features come from the cache. The table (unirep.studies.study_table) is rebuilt
from the records at the end of every run.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import MISSING, DictConfig, OmegaConf

from unirep.config import FineTuneConfig, LinearProbeConfig, save_config, to_container
from unirep.evaluate import build_backbone, checked_backbone_specs
from unirep.features import CACHE_FORMAT, ExtractionSettings, FeatureCache, extract_features
from unirep.fileio import atomic_write_text, ensure_writable_dir, sha256_json
from unirep.metrics import Metric
from unirep.ood.benchmarks import OodBenchmark, create_benchmark, load_benchmark_card
from unirep.ood.records import OodRecord, existing_ood_record, ood_record_path, write_ood_record
from unirep.ood.run import BenchmarkFeatures, checked_scores, score_record, skip_note
from unirep.ood.scores import ScoreNotApplicable
from unirep.runtime import library_versions
from unirep.studies.networks import (
    Network,
    NetworkBuilder,
    Plan,
    benchmark_images,
    check_strategies,
    plans,
    subsample_id_train,
)


def _study_finetune_defaults() -> FineTuneConfig:
    # One learning rate (epochs still chosen on val), train-only fits, no mirroring: the 2-core budget, and digits
    # are not mirror-symmetric. A networked user widens `finetune.lrs` and sets `finetune.refit=train+val`.
    return FineTuneConfig(lrs=[0.01], max_epochs=5, patience=2, refit="train", hflip=0.0, precision="32-true")


@dataclass
class FinetuneOodConfig:
    """`unirep ood-study`: which backbones, benchmarks, strategies, seeds and scores (defaults sized for 2 cores)."""

    backbones: list[Any] = MISSING
    benchmarks: list[str] = MISSING
    strategies: list[str] = field(default_factory=lambda: ["frozen", "full", "lp-ft", "wise"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # fine-tuning seeds (head init, data order)
    wise_alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    wise_endpoints: list[str] = field(default_factory=lambda: ["full"])  # fine-tuning strategies WiSE-FT mixes in
    wise_seeds: list[int] | None = None  # the seeds of the WiSE-FT grid (None: every seed)
    wise_theta_0: str = "frozen"  # WiSE-FT's α = 0 network: frozen (linear-probe head) | zero-shot (CLIP's text head)
    scores: list[str] = field(default_factory=list)  # empty: every registered score
    max_train: int | None = None  # stratified subsample of ID train (None: all of it)
    out: str = "runs/ood-study"
    cache_dir: str = "~/.cache/unirep/features"
    max_input_size: int | None = 32
    batch_size: int = 128
    num_workers: int = 0
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = True
    n_boot: int = 1000  # bootstrap resamples of the test examples (the table's CIs)
    force: bool = False
    linear: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    finetune: FineTuneConfig = field(default_factory=_study_finetune_defaults)


@dataclass
class StudyResult:
    records: list[OodRecord]
    new_records: int
    seconds: float


class NetworkFeatures:
    """Every set of one benchmark through one network's backbone, cached per (network identity, set)."""

    FORMAT = 1

    def __init__(self, bench: OodBenchmark, cache: FeatureCache, settings: ExtractionSettings):
        self.bench, self.cache, self.settings = bench, cache, settings
        self.seconds = 0.0  # of the last network's features: extraction, or reading them from the cache
        self._last: tuple[str, dict[str, np.ndarray], float] | None = None  # a network's are asked for twice

    def key(self, identity: dict, set_key: str) -> str:
        selection = self.bench.sets[set_key]
        numerics = {"precision": self.settings.precision, "channels_last": self.settings.channels_last}
        return sha256_json({"format": CACHE_FORMAT, "study_format": self.FORMAT, "backbone": identity,
                            "task_digest": self.bench.task_digests[selection.task], "split": selection.split,
                            "ids": list(selection.ids), "numerics": numerics})

    def __call__(self, backbone) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        identity = backbone.identity()
        digest = sha256_json(identity)
        if self._last is not None and self._last[0] == digest:
            self.seconds = self._last[2]
            return self._last[1]
        out = {}
        for set_key, selection in self.bench.sets.items():
            key = self.key(identity, set_key)
            found = self.cache.load(key, need_logits=False, labels=np.asarray(selection.labels))
            if found is None:
                found = extract_features(backbone, benchmark_images(self.bench, set_key), self.settings,
                                         description=f"{backbone.name}/{set_key}")
                self.cache.save(key, found, {"backbone": identity, "benchmark": self.bench.name, "set": set_key})
            out[set_key] = found.features
        self.seconds = time.perf_counter() - start
        self._last = (digest, out, self.seconds)
        return out


def check_study(cfg: DictConfig) -> tuple[list, list[str], list]:
    """Everything that can be refused before any work: backbones, strategies, α grid, scores, benchmark cards
    (each must name a validation OoD set: the scores' hyperparameters are chosen on it, never on a test set)."""
    specs = checked_backbone_specs(cfg)
    check_strategies(cfg)
    scores = checked_scores(OmegaConf.create({"classifier": "linear", "scores": list(cfg.scores)}))
    cards = [load_benchmark_card(name) for name in cfg.benchmarks]
    if not cards:
        from unirep.errors import ConfigError

        raise ConfigError("benchmarks is empty: name OoD benchmarks (tasks/ood/*.yaml), e.g. [opencv-digits-ood]")
    return specs, scores, cards


def run_study(cfg: DictConfig) -> StudyResult:
    """Run (or resume) the study of `cfg`; returns every record, new and existing.

    Example:
        >>> cfg = load_config(FinetuneOodConfig, "configs/ood/finetune-study.yaml")
        >>> result = run_study(cfg)
    """
    start = time.perf_counter()
    specs, scores, cards = check_study(cfg)
    out = ensure_writable_dir(cfg.out)
    save_config(cfg, out / "study-config.yaml")
    settings = ExtractionSettings(batch_size=cfg.batch_size, num_workers=cfg.num_workers, device=cfg.device,
                                  precision=cfg.precision, channels_last=cfg.channels_last)
    cache = FeatureCache(cfg.cache_dir)
    versions = library_versions()
    records: list[OodRecord] = []
    new = 0
    for spec in specs:
        base = spec.display_name
        study_plans = plans(cfg, base)
        pretrained = None
        for card in cards:
            missing = _missing(out, study_plans, card.name, scores, cfg.force, records)
            if not missing:
                continue
            bench = subsample_id_train(create_benchmark(card.path), cfg.max_train)
            pretrained = pretrained or build_backbone(spec, cfg)
            features = NetworkFeatures(bench, cache, settings)
            builder = NetworkBuilder(cfg, bench, pretrained, base, out, features)
            for plan in study_plans:
                if plan.label not in missing:
                    continue
                # Another run sharing this out dir may have written them since: look again (records are atomic).
                if not cfg.force:
                    missing[plan.label] = _still_missing(out, plan, bench.name, missing[plan.label], records)
                if not missing[plan.label]:
                    continue
                network = builder.build(plan)
                data = _benchmark_data(bench, network, features(network.backbone), features.seconds, plan)
                for name in missing[plan.label]:
                    record = _score(name, bench, data, plan, network, cfg, versions, out)
                    if record is not None:
                        records.append(record)
                        new += 1
                _progress(f"{plan.label} on {bench.name}: {len(missing[plan.label])} scores "
                          f"(ID top-1 {data.id_accuracy:.2f}; {time.perf_counter() - start:.0f} s so far)")
    return StudyResult(records, new, time.perf_counter() - start)


def _missing(out: Path, study_plans: list[Plan], benchmark: str, scores: list[str], force: bool,
             records: list[OodRecord]) -> dict[str, list[str]]:
    """{network label: scores without a record} for one benchmark; existing records are added to `records`."""
    missing: dict[str, list[str]] = {}
    for plan in study_plans:
        for name in scores:
            path = ood_record_path(out, plan.label, benchmark, plan.classifier, name)
            record = None if force else existing_ood_record(path)
            if record is not None:
                records.append(record)
            elif force or not skip_note(path).exists():
                missing.setdefault(plan.label, []).append(name)
    return missing


def _still_missing(out: Path, plan: Plan, benchmark: str, scores: list[str], records: list[OodRecord]) -> list[str]:
    left = []
    for name in scores:
        record = existing_ood_record(ood_record_path(out, plan.label, benchmark, plan.classifier, name))
        if record is None:
            left.append(name)
        else:
            records.append(record)
    return left


def _benchmark_data(bench: OodBenchmark, network: Network, features: dict[str, np.ndarray], extract_s: float,
                    plan: Plan) -> BenchmarkFeatures:
    labels = {key: s.labels for key, s in bench.sets.items()}
    logits = {key: network.head.logits(x) for key, x in features.items()}
    predictions = np.argmax(logits["id/test"], axis=1)
    accuracy = float(Metric.TOP1(labels["id/test"], predictions))
    hyper = {**plan.describe(), "head": network.classifier, **network.hyperparameters}
    return BenchmarkFeatures(features, logits, labels, network.head, accuracy, predictions, hyper,
                             {"extract_s": round(extract_s, 3)})


def _score(name: str, bench: OodBenchmark, data: BenchmarkFeatures, plan: Plan, network: Network, cfg: DictConfig,
           versions: dict, out: Path) -> OodRecord | None:
    # unirep.ood's record code reads the head's name from its config's `classifier`.
    view = OmegaConf.create({**to_container(cfg), "classifier": plan.classifier})
    path = ood_record_path(out, plan.label, bench.name, plan.classifier, name)
    copied = _same_network_record(name, bench, data, plan, network, view, out)
    if copied is not None:
        write_ood_record(out, copied)
        return copied
    try:
        record = score_record(name, bench, data, plan.label, network.backbone.identity(), view, versions)
    except ScoreNotApplicable as exc:
        line = f"skipped {name} on {plan.label}/{bench.name}: {exc}"
        print(f"unirep: {line}", file=sys.stderr)
        atomic_write_text(skip_note(path), line + "\n")
        return None
    write_ood_record(out, record)
    return record


def _same_network_record(name: str, bench: OodBenchmark, data: BenchmarkFeatures, plan: Plan, network: Network,
                         view: DictConfig, out: Path) -> OodRecord | None:
    """WiSE at α = 0 / 1 is the frozen / fine-tuned network itself: its record is that network's, filed under the
    WiSE label (scoring the same features with the same head again would give the same numbers), when one exists
    for the very same network (identity and head)."""
    same = plan.same_network(view.wise_theta_0)
    if same is None:
        return None
    source_path = ood_record_path(out, same[0], bench.name, same[1], name)
    source = existing_ood_record(source_path)
    if source is None or source.backbone_identity != network.backbone.identity():
        return None
    hyper = {**data.classifier_hyperparameters, "record_copied_from": source_path.relative_to(out).as_posix()}
    return replace(source, backbone=plan.label, classifier=plan.classifier, classifier_hyperparameters=hyper,
                   config=to_container(view), created_at=OodRecord.__dataclass_fields__["created_at"].default_factory())


def _progress(message: str) -> None:
    print(f"unirep: {message}", file=sys.stderr, flush=True)


__all__ = ["FinetuneOodConfig", "StudyResult", "check_study", "run_study"]
