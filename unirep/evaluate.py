"""The evaluation pipeline: task -> loader -> backbone -> feature cache -> protocol -> result record.

`evaluate(cfg)` walks backbones x tasks x protocols x seeds. A record that already exists is skipped (unless
`force`), so a killed run resumes; a backbone is only built, and features only extracted, when some record
still needs them. Protocols that train the network (`needs_images`, fine-tuning) get the task's images and the
backbone instead of features. Protocols that read source-classifier logits (LEEP, NCE) are skipped, with a
message, on backbones without a source head. With a Lightning `strategy=ddp`, every rank runs this pipeline;
only global rank 0 writes files.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig

from unirep.backbones import check_backbone, create_backbone
from unirep.backbones.base import Backbone
from unirep.config import BackboneSpec, backbone_specs, save_config, to_container
from unirep.faults import fault_point
from unirep.features import ExtractionSettings, FeatureCache
from unirep.fewshot import mean_ci
from unirep.fileio import atomic_write_json, ensure_writable_dir
from unirep.metrics import Metric
from unirep.probes import FeatureSplit, SealedSplit
from unirep.protocols import Protocol, SealedImages, TaskFeatures, TaskImages, create_protocol
from unirep.results import ResultRecord, existing_record, record_path, records_lock, slug, write_record
from unirep.runtime import library_versions
from unirep.tasks import Task, create_task, resolve_tasks


def extraction_settings(cfg: DictConfig) -> ExtractionSettings:
    return ExtractionSettings(batch_size=cfg.batch_size, num_workers=cfg.num_workers, device=cfg.device,
                              precision=cfg.precision, channels_last=cfg.channels_last)


def checked_backbone_specs(cfg: DictConfig) -> list[BackboneSpec]:
    """The run's backbones, each request checked before the first is built: a bad third name fails at once, not
    after two backbones' work."""
    specs = backbone_specs(cfg)
    for spec in specs:
        check_backbone(spec.name, pretrained=spec.pretrained, weights=spec.weights, layer=spec.layer,
                       input_size=spec.input_size, seed=spec.seed)
    return specs


def build_backbone(spec: BackboneSpec, cfg: DictConfig):
    """The spec's backbone, at its own input size capped by `cfg.max_input_size` (unless the spec sets one)."""
    kwargs = dict(pretrained=spec.pretrained, weights=spec.weights, layer=spec.layer, seed=spec.seed)
    backbone = create_backbone(spec.name, input_size=spec.input_size, **kwargs)
    cap = cfg.max_input_size
    if spec.input_size is None and cap and backbone.data_config.input_size > cap:
        # Built again rather than patched: some architectures (ViTs) size their position embedding at creation.
        backbone = create_backbone(spec.name, input_size=cap, **kwargs)
    return backbone


@dataclass
class Job:
    spec: BackboneSpec
    task: str
    protocol: str
    seed: int

    def path(self, out: Path) -> Path:
        return record_path(out, self.spec.display_name, self.task, self.protocol, self.seed)


def evaluate(cfg: DictConfig) -> list[ResultRecord]:
    """Run (or resume) every job of `cfg` and return all its records, new and existing.

    Example:
        >>> cfg = load_config(EvalConfig, dotlist=["backbones=[raw-pixels]", "tasks=[sklearn-digits]"])
        >>> records = evaluate(cfg)
    """
    settings = extraction_settings(cfg)  # refuses a precision the device cannot run, before anything is written
    cache = FeatureCache(cfg.cache_dir)  # refuses a cache path that is not a folder, likewise
    out = ensure_writable_dir(cfg.out)
    specs = checked_backbone_specs(cfg)
    tasks = resolve_tasks(list(cfg.tasks))
    protocols = {name: create_protocol(name, cfg) for name in cfg.protocols}
    # Saved with the first record (or at the end): a run refused on its inputs leaves the config.yaml of the
    # records already there untouched.
    config_unsaved = is_global_zero()
    versions = library_versions()
    records: list[ResultRecord] = []
    loaded_tasks: dict[str, Task] = {}
    for spec in specs:
        backbone = None
        for task_name in tasks:
            jobs = [Job(spec, task_name, name, s) for name, protocol in protocols.items() for s in protocol.seeds()]
            # One process at a time computes a (backbone, task)'s records: a second run on the same --out waits,
            # then finds them done. An unreadable record is named and computed again.
            fault_point("records-lock")
            with records_lock(out, spec.display_name, task_name, enabled=not is_distributed()):
                existing = [None if cfg.force else existing_record(j.path(out)) for j in jobs]
                records.extend(r for r in existing if r is not None)
                pending = [j for j, r in zip(jobs, existing, strict=True) if r is None]
                if not pending:
                    continue
                task = loaded_tasks.get(task_name) or loaded_tasks.setdefault(task_name, create_task(task_name))
                backbone = backbone or build_backbone(spec, cfg)
                pending = runnable_jobs(pending, protocols, backbone)
                if not pending:
                    continue
                need_logits = any(protocols[j.protocol].needs_source_logits for j in pending)
                need_features = any(not protocols[j.protocol].needs_images for j in pending)
                extract_start = time.perf_counter()
                splits = {s: cache.get_or_extract(backbone, task.manifest, s, task.split(s), settings, need_logits)
                          for s in ("train", "val", "test") if need_features}
                extract_seconds = time.perf_counter() - extract_start
                for job in pending:
                    record = _run_job(job, task, backbone, splits, protocols[job.protocol], cfg, versions,
                                      extract_seconds)
                    if is_global_zero():
                        if config_unsaved:
                            save_config(cfg, out / "config.yaml")
                            config_unsaved = False
                        _write_subset_manifest(out, record)
                        write_record(out, record)
                    records.append(record)
    if config_unsaved:
        save_config(cfg, out / "config.yaml")
    return records


def runnable_jobs(jobs: list[Job], protocols: dict[str, Protocol], backbone: Backbone) -> list[Job]:
    """The jobs `backbone` can run. A protocol that reads source-classifier logits (LEEP, NCE) is skipped on a
    backbone without a source head, with one stderr line per (backbone, task, protocol) and no record, so the
    other protocols of the run still produce theirs."""
    runnable = []
    for job in jobs:
        if protocols[job.protocol].needs_source_logits and not backbone.has_source_head:
            if job.seed == protocols[job.protocol].seeds()[0]:
                print(f"unirep: skipped {job.protocol} on {job.spec.display_name}/{job.task}: the backbone has no "
                      "source classification head (use a packaged ImageNet backbone or a unirep source network)",
                      file=sys.stderr)
            continue
        runnable.append(job)
    return runnable


def is_distributed() -> bool:
    """True inside a distributed (Lightning DDP) run: its ranks run this pipeline in lockstep."""
    return any(name in os.environ for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


def is_global_zero() -> bool:
    """False on the extra processes of a distributed (Lightning DDP) run, which must not write files."""
    if not is_distributed():
        return True
    from lightning.fabric.utilities.rank_zero import rank_zero_only  # set by Lightning to the global rank

    return rank_zero_only.rank == 0


def _task_features(task, splits) -> TaskFeatures:
    return TaskFeatures(
        train=FeatureSplit(splits["train"].features, splits["train"].labels),
        val=FeatureSplit(splits["val"].features, splits["val"].labels),
        test=SealedSplit(splits["test"].features, splits["test"].labels),
        source_logits={s: splits[s].source_logits for s in ("train", "val") if splits[s].source_logits is not None},
        ids={s: task.manifest.splits[s] for s in ("train", "val")},
    )


def _task_images(task, backbone) -> TaskImages:
    return TaskImages(train=task.split("train"), val=task.split("val"), test=SealedImages(task.split("test")),
                      backbone=backbone, num_classes=task.card.num_classes)


def _run_job(job, task, backbone, splits, protocol, cfg, versions, extract_seconds) -> ResultRecord:
    torch.manual_seed(job.seed)
    data = _task_images(task, backbone) if protocol.needs_images else _task_features(task, splits)
    fault_point("probe")
    start = time.perf_counter()
    outcome = protocol.run(data, Metric(task.card.metric), job.seed)
    timings = {"protocol_s": round(time.perf_counter() - start, 3), **outcome.timings}
    if not protocol.needs_images:
        timings.update(extract_s=round(extract_seconds, 3), extract_cached=all(s.cached for s in splits.values()))
    counts = task.manifest.counts
    return ResultRecord(
        backbone=job.spec.display_name,
        task=task.name,
        protocol=job.protocol,
        metric=outcome.metric,
        score=outcome.score,
        val_score=outcome.val_score,
        hyperparameters=outcome.hyperparameters,
        n_train=counts["train"],
        n_val=counts["val"],
        n_test=counts["test"],
        split_manifest=task.manifest.summary(),
        seed=job.seed,
        timings=timings,
        versions=versions,
        config=to_container(cfg),
        backbone_identity=backbone.identity(),
        test_labels=outcome.test_labels,
        test_predictions=outcome.test_predictions,
        extra=outcome.extra,
    )


def _write_subset_manifest(out: Path, record: ResultRecord) -> None:
    """Low-data protocols return the ids of the subset they drew: publish them once per (task, protocol, seed)
    under <out>/subsets/, keeping only the digest in the record."""
    subset = record.extra.pop("subset", None)
    if subset is None:
        return
    path = out / "subsets" / slug(record.task) / f"{slug(record.protocol)}-seed{record.seed}.json"
    if not path.exists():
        atomic_write_json(path, {"task": record.task, "protocol": record.protocol, "seed": record.seed,
                                 "split_manifest": record.split_manifest["digest"],
                                 "digest": record.extra["subset_digest"], **subset})


def summary_table(records: list[ResultRecord]) -> pd.DataFrame:
    """Backbone x task table of test scores, one block per protocol; with several seeds, mean ± 95 % CI."""
    if not records:
        return pd.DataFrame()
    frame = pd.DataFrame([{"protocol": r.protocol, "backbone": r.backbone, "task": r.task, "score": r.score}
                          for r in records])
    cells = frame.groupby(["protocol", "backbone", "task"], sort=False)["score"].agg(list)
    table = cells.map(_format_cell).unstack("task")
    means = frame.groupby(["protocol", "backbone", "task"])["score"].mean().unstack("task").mean(axis=1)
    table["mean"] = means.reindex(table.index).map(lambda v: f"{v:.2f}")
    return table


def _format_cell(scores: list[float]) -> str:
    mean, half = mean_ci(scores)
    return f"{mean:.2f}" if len(scores) == 1 else f"{mean:.2f}±{half:.2f}"
