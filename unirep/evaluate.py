"""The evaluation pipeline: task -> loader -> backbone -> feature cache -> protocol -> result record.

`evaluate(cfg)` walks backbones x tasks x protocols x seeds. A record that already exists is skipped (unless
`force`), so a killed run resumes; a backbone is only built, and features only extracted, when some record
still needs them. Protocols that train the network (`needs_images`, fine-tuning) get the task's images and the
backbone instead of features. Protocols that read source-classifier logits (LEEP, NCE) are skipped, with a
message, on backbones without a source head.

Distributed (`strategy=ddp devices=N [num_nodes=M] [accelerator=gpu]`, on Lightning Fabric: unirep.distributed):
every process runs this pipeline in lockstep and only global rank 0 writes files (feature cache, records, subset
manifests, config.yaml); rank 0 also holds the records lock and decides for all which records are missing and
whether features are cached. Extraction is sharded: each rank runs the forward pass over its contiguous 1/N of a
split, and the features come back to every rank in manifest order. The feature jobs of a (backbone, task) - probes
and estimators, one per (protocol, seed) - are then dealt round robin (continuing across tasks) and each rank
runs its own on the gathered features; the records are gathered to rank 0. Why dealt, not all on rank 0: these
jobs run on each process's CPU and dominate a GPU run once extraction is fast (a 45-C linear sweep is seconds to
minutes; a forward pass over the same split on a GPU, seconds), and the features are already on every rank.
Fine-tuning jobs run on all ranks together: their Lightning Trainer uses the eval's processes (DDP).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from unirep.backbones import check_backbone, create_backbone
from unirep.backbones.base import Backbone
from unirep.config import BackboneSpec, backbone_specs, save_config, to_container
from unirep.distributed import World, WorldSettings, current_world, launch_world, launched_as_zero
from unirep.errors import ConfigError
from unirep.faults import fault_point
from unirep.features import ExtractionSettings, FeatureCache, backbone_inputs, is_waveform_backbone
from unirep.fewshot import mean_ci
from unirep.fileio import atomic_write_json, ensure_writable_dir
from unirep.metrics import Metric
from unirep.probes import FeatureSplit, SealedSplit
from unirep.protocols import Protocol, SealedImages, TaskFeatures, TaskImages, create_protocol
from unirep.results import ResultRecord, existing_record, record_path, records_lock, slug, write_record
from unirep.runtime import library_versions, resolve_device
from unirep.tasks import Task, create_task, resolve_tasks


def extraction_settings(cfg: DictConfig, world: World | None = None) -> ExtractionSettings:
    """How this process extracts: `cfg.device` in a one-process run ("auto" narrowed by `cfg.accelerator`), the
    process's own device (the launcher's choice) in a distributed one."""
    device = cfg.device
    if world is not None and world.distributed and world.device is not None:
        device = str(world.device)
    elif device == "auto" and cfg.accelerator != "auto":
        device = "cpu" if cfg.accelerator == "cpu" else "cuda"
    return ExtractionSettings(batch_size=cfg.batch_size, num_workers=cfg.num_workers, device=device,
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
    if spec.input_size is None and cap and backbone.data_config.input_size > cap and not is_waveform_backbone(backbone):
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


@dataclass
class _Run:
    """What every (backbone, task) of one `evaluate` call shares."""

    cfg: DictConfig
    world: World
    out: Path
    cache: FeatureCache
    settings: ExtractionSettings
    protocols: dict[str, Protocol]
    versions: dict
    records: list[ResultRecord] = field(default_factory=list)
    config_unsaved: bool = True
    dealt: int = 0  # feature jobs dealt so far: the round robin goes on across (backbone, task)s
    loaded_tasks: dict[str, Task] = field(default_factory=dict)

    def task(self, name: str) -> Task:
        return self.loaded_tasks.get(name) or self.loaded_tasks.setdefault(name, create_task(name))


def evaluate(cfg: DictConfig) -> list[ResultRecord]:
    """Run (or resume) every job of `cfg` and return all its records, new and existing (on global rank 0; the other
    processes of a distributed run return []).

    Example:
        >>> cfg = load_config(EvalConfig, dotlist=["backbones=[raw-pixels]", "tasks=[sklearn-digits]"])
        >>> records = evaluate(cfg)
    """
    extraction_settings(cfg)  # refuses a precision the device cannot run, before anything is written
    cache = FeatureCache(cfg.cache_dir)  # refuses a cache path that is not a folder, likewise
    # Checked (and created) by the process that will be rank 0; the copies a launcher starts only read.
    out = ensure_writable_dir(cfg.out) if launched_as_zero() else Path(cfg.out)
    specs = checked_backbone_specs(cfg)
    tasks = resolve_tasks(list(cfg.tasks))
    protocols = {name: create_protocol(name, cfg) for name in cfg.protocols}
    cfg, settings = run_world_settings(cfg, protocols)
    protocols = {name: create_protocol(name, cfg) for name in cfg.protocols}
    world = launch_world(settings)  # the last step before any work: a launcher re-runs the command from the top
    # Saved with the first record (or at the end): a run refused on its inputs leaves the config.yaml of the
    # records already there untouched.
    run = _Run(cfg, world, out, cache, extraction_settings(cfg, world), protocols, library_versions(),
               config_unsaved=world.is_zero)
    for spec in specs:
        backbone = None
        for task_name in tasks:
            backbone = _evaluate_backbone_on_task(run, spec, task_name, backbone)
    if run.config_unsaved:
        save_config(cfg, out / "config.yaml")
    for protocol in protocols.values():  # protocols over data of their own (OoD benchmarks) write their records
        if not protocol.per_task and world.is_zero:
            protocol.run_after_tasks()
    return run.records if world.is_zero else []


def run_world_settings(cfg: DictConfig, protocols: dict[str, Protocol]) -> tuple[DictConfig, WorldSettings]:
    """The processes `cfg` runs in, and `cfg` with fine-tuning's Trainer set to run in the same ones.

    A fine-tuning protocol trains with a Lightning Trainer inside those processes: in a distributed eval its
    `finetune.strategy/devices/num_nodes/accelerator` follow the eval's (the Trainer uses the process group the eval
    made); in a one-process eval, `finetune.strategy=ddp finetune.devices=N` makes the whole eval run on N processes
    (before, each of them re-ran the whole pipeline). Two different multi-process requests are refused, as is a
    `device` that names one device for several processes, or one of the other kind than `accelerator`.
    """
    world = WorldSettings(cfg.accelerator, cfg.devices, cfg.strategy, cfg.num_nodes)
    ft = cfg.finetune
    trains = any(protocol.needs_images for protocol in protocols.values())
    ft_world = WorldSettings(ft.accelerator, ft.devices, ft.strategy, ft.num_nodes, "finetune.")
    if trains and not ft_world.single:
        if not world.single and (ft.devices, ft.num_nodes) != (cfg.devices, cfg.num_nodes):
            raise ConfigError(f"finetune.devices={ft.devices} finetune.num_nodes={ft.num_nodes} differ from the "
                              f"eval's devices={cfg.devices} num_nodes={cfg.num_nodes}: fine-tuning runs in the eval's "
                              "processes; set only devices/num_nodes/strategy (finetune.* follow them)")
        if world.single:
            accelerator = ft.accelerator if cfg.accelerator == "auto" else cfg.accelerator
            world = WorldSettings(accelerator, ft.devices, ft.strategy, ft.num_nodes, "finetune.")
    if world.single:
        _check_device(cfg)
        return cfg, world
    if cfg.device != "auto":
        raise ConfigError(f"device={cfg.device!r} names one device, but the run has a process per device "
                          f"(devices={world.devices}, num_nodes={world.num_nodes}): leave device=auto (each process "
                          "uses its own) and choose the kind with accelerator=cpu|gpu")
    if trains:
        if "auto" not in (ft.accelerator, world.accelerator) and ft.accelerator != world.accelerator:
            raise ConfigError(f"finetune.accelerator={ft.accelerator!r} differs from accelerator="
                              f"{world.accelerator!r}: fine-tuning runs in the eval's processes; set one of them")
        accelerator = world.accelerator if world.accelerator != "auto" else ft.accelerator
        cfg = OmegaConf.merge(cfg, {"finetune": {"strategy": "ddp", "devices": world.devices,
                                                 "num_nodes": world.num_nodes, "accelerator": accelerator}})
        world = WorldSettings(accelerator, world.devices, world.strategy, world.num_nodes, world.where)
    return cfg, world


def _check_device(cfg: DictConfig) -> None:
    """A one-process run's `device` must be of the `accelerator`'s kind (both are settings of the same run)."""
    if cfg.accelerator == "auto":
        return
    wanted = resolve_device(cfg.accelerator, setting="accelerator").type  # refuses a GPU where there is none
    if cfg.device != "auto" and resolve_device(cfg.device).type != wanted:
        raise ConfigError(f"device={cfg.device!r} is not of the kind accelerator={cfg.accelerator!r} asks for: "
                          "set one of them (device=auto follows the accelerator)")


def _evaluate_backbone_on_task(run: _Run, spec: BackboneSpec, task_name: str, backbone: Backbone | None):
    """Every pending job of (spec, task_name); returns the backbone (built when some job needed it) for the next
    task. One process at a time computes a (backbone, task)'s records: a second run on the same --out waits, then
    finds them done; in a distributed run global rank 0 holds the lock and decides for all ranks. An unreadable
    record is named and computed again."""
    cfg, world, protocols = run.cfg, run.world, run.protocols
    jobs = [Job(spec, task_name, name, s) for name, protocol in protocols.items() for s in protocol.seeds()]
    fault_point("records-lock")
    with records_lock(run.out, spec.display_name, task_name, enabled=world.is_zero):
        pending = _pending_jobs(run, jobs)
        if not pending:
            return backbone
        task = run.task(task_name)
        backbone = backbone or build_backbone(spec, cfg)
        if _skips_audio_without_waveforms(run, backbone, task):
            return backbone
        pending = runnable_jobs(pending, protocols, backbone, report=world.is_zero)
        if not pending:
            return backbone
        need_logits = any(protocols[j.protocol].needs_source_logits for j in pending)
        need_features = any(not protocols[j.protocol].needs_images for j in pending)
        extract_start = time.perf_counter()
        splits = {s: run.cache.get_or_extract(backbone, task.manifest, s, backbone_inputs(task, backbone, s),
                                              run.settings, need_logits, world)
                  for s in ("train", "val", "test") if need_features}
        extract_seconds = time.perf_counter() - extract_start
        context = (task, backbone, splits, extract_seconds)
        if not world.distributed:
            for job in pending:
                _publish(run, _run_job(job, *context, protocols[job.protocol], cfg, run.versions))
            return backbone
        feature_jobs = [j for j in pending if not protocols[j.protocol].needs_images]
        for record in _dealt_jobs(run, feature_jobs, context):
            _publish(run, record)
        for job in (j for j in pending if protocols[j.protocol].needs_images):  # every rank trains it together
            record = _run_job(job, *context, protocols[job.protocol], cfg, run.versions)
            _publish(run, record)
    return backbone


def _skips_audio_without_waveforms(run: _Run, backbone: Backbone, task: Task) -> bool:
    """True (with one stderr line) for a waveform backbone on an audio task that holds no waveforms (the MFCC task)
    in a run of several tasks: the backbone is evaluated where there are waveforms, as LEEP is skipped on backbones
    without a source head. Asked for that one task alone, it is refused (unirep.features.backbone_inputs)."""
    if not is_waveform_backbone(backbone) or getattr(task, "kind", "image") != "audio" or task.has_waveforms:
        return False
    if len(resolve_tasks(list(run.cfg.tasks))) < 2:
        return False
    if run.world.is_zero:
        print(f"unirep: skipped {backbone.name} on {task.name}: the task holds no waveforms for this waveform "
              "backbone; its other tasks are evaluated", file=sys.stderr)
    return True


def _pending_jobs(run: _Run, jobs: list[Job]) -> list[Job]:
    """The jobs without a finished record (all with `force`): rank 0 reads the records and tells the others."""
    existing: list[ResultRecord | None] = []

    def read() -> list[bool]:
        existing.extend(None if run.cfg.force else existing_record(j.path(run.out)) for j in jobs)
        return [record is None for record in existing]

    missing = run.world.on_zero(read)
    run.records.extend(r for r in existing if r is not None)
    return [job for job, needed in zip(jobs, missing, strict=True) if needed]


def _dealt_jobs(run: _Run, jobs: list[Job], context: tuple) -> list[ResultRecord]:
    """`jobs` dealt round robin over the ranks (each runs its own on the gathered features), records gathered
    back in `jobs`' order. Why dealt rather than done by rank 0: probes and estimators run on the CPU of each
    process, and the features are already on every rank after the gather, so N processes finish N jobs at once."""
    world = run.world
    mine = [(i, job) for i, job in enumerate(jobs) if world.owner(run.dealt + i) == world.rank]
    run.dealt += len(jobs)
    done = world.each(lambda: [(i, _run_job(job, *context, run.protocols[job.protocol], run.cfg, run.versions,
                                            rank=world.rank)) for i, job in mine])
    return [record for _, record in sorted(pair for part in done for pair in part)]


def _publish(run: _Run, record: ResultRecord) -> None:
    """Global rank 0 writes `record` (with its subset manifest, and the run's config.yaml with the first)."""
    if run.world.is_zero:
        if run.config_unsaved:
            save_config(run.cfg, run.out / "config.yaml")
            run.config_unsaved = False
        _write_subset_manifest(run.out, record)
        write_record(run.out, record)
        run.records.append(record)


def runnable_jobs(jobs: list[Job], protocols: dict[str, Protocol], backbone: Backbone,
                  report: bool = True) -> list[Job]:
    """The jobs `backbone` can run. A protocol that reads source-classifier logits (LEEP, NCE) is skipped on a
    backbone without a source head, with one stderr line per (backbone, task, protocol) (when `report`) and no
    record, so the other protocols of the run still produce theirs."""
    runnable = []
    for job in jobs:
        if protocols[job.protocol].needs_source_logits and not backbone.has_source_head:
            if report and job.seed == protocols[job.protocol].seeds()[0]:
                print(f"unirep: skipped {job.protocol} on {job.spec.display_name}/{job.task}: the backbone has no "
                      "source classification head (use a packaged ImageNet backbone or a unirep source network)",
                      file=sys.stderr)
            continue
        runnable.append(job)
    return runnable


def is_distributed() -> bool:
    """True inside a distributed run: its processes run this pipeline together."""
    return current_world().distributed


def is_global_zero() -> bool:
    """False on the extra processes of a distributed run, which must not write files."""
    return current_world().is_zero and launched_as_zero()


def _task_features(task, splits, backbone=None) -> TaskFeatures:
    return TaskFeatures(
        train=FeatureSplit(splits["train"].features, splits["train"].labels),
        val=FeatureSplit(splits["val"].features, splits["val"].labels),
        test=SealedSplit(splits["test"].features, splits["test"].labels),
        source_logits={s: splits[s].source_logits for s in ("train", "val") if splits[s].source_logits is not None},
        ids={s: task.manifest.splits[s] for s in ("train", "val")},
        task=task.name, class_names=tuple(task.card.classes), backbone=backbone,
    )


def _task_images(task, backbone) -> TaskImages:
    if is_waveform_backbone(backbone):
        raise ConfigError(f"backbone {backbone.name!r} reads waveforms: protocols that train the network on images "
                          "(fine-tuning) cannot run it; use linear, knn or the estimators")
    return TaskImages(train=task.split("train"), val=task.split("val"), test=SealedImages(task.split("test")),
                      backbone=backbone, num_classes=task.card.num_classes)


def _run_job(job, task, backbone, splits, extract_seconds, protocol, cfg, versions, rank=None) -> ResultRecord:
    torch.manual_seed(job.seed)
    data = _task_images(task, backbone) if protocol.needs_images else _task_features(task, splits, backbone)
    fault_point("probe")
    start = time.perf_counter()
    outcome = protocol.run(data, Metric(task.card.metric), job.seed)
    timings = {"protocol_s": round(time.perf_counter() - start, 3), **outcome.timings}
    if not protocol.needs_images:
        timings.update(extract_s=round(extract_seconds, 3), extract_cached=all(s.cached for s in splits.values()))
        per_rank = {name: s.images_per_rank for name, s in splits.items() if s.images_per_rank is not None}
        if rank is not None:  # distributed: who extracted what (images through the backbone), who ran the job
            timings.update(extract_images_per_rank=per_rank, job_rank=rank)
    counts = task.manifest.counts
    extra = outcome.extra
    summarise_inputs = getattr(task, "input_summary", None)  # audio tasks: what reading the clips did to them
    if summarise_inputs is not None:
        rate = backbone.sample_rate if is_waveform_backbone(backbone) else None
        extra = {**extra, "inputs": {**summarise_inputs(rate),
                                     "read_as": backbone_inputs(task, backbone, "test").input_description()}}
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
        extra=extra,
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
