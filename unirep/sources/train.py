"""Run a source-training scheme end to end: label sets -> networks -> Lightning fits -> a unirep checkpoint.

Each network (and its FSFT stage) is one `Trainer.fit` with its own folder under `<out>/nets/<network>/<stage>/`:
CSV logs, and `checkpoints/last.ckpt` after every epoch. A killed run, started again with the same config,
resumes every stage from its last.ckpt (Lightning's own resume), skipping what already finished. When all
networks are trained, global rank 0 measures them on the source val split and writes the checkpoint
(`weights.safetensors` + `unirep-checkpoint.json`) into `<out>`, which `create_backbone(<out>)` loads.

Distributed training is Lightning's: `trainer.strategy=ddp trainer.devices=N` starts N processes (Lightning Fabric,
before the first fit: unirep.distributed), each running this same function; global rank 0 builds the label sets
and the cached splits and sends them to the others, and alone writes files. The Trainers use those processes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig

from unirep.backbones.base import DataConfig
from unirep.backbones.checkpoint import METADATA_FILE, write_checkpoint
from unirep.config import save_config, to_container
from unirep.distributed import SCRIPT_STRATEGIES, World, WorldSettings, launch_world
from unirep.errors import ConfigError, WeightsError
from unirep.fileio import atomic_write_json, ensure_writable_dir, sha256_json
from unirep.metrics import Metric
from unirep.quiet import quiet_lightning
from unirep.runtime import library_versions
from unirep.sources.config import run_dir
from unirep.sources.data import SourceDataModule, subset
from unirep.sources.label_sets import LabelSet, VariationContext, build_label_sets
from unirep.sources.module import AugmentSettings, SourceModule
from unirep.sources.networks import (
    NetworkSpec,
    SourceNetwork,
    check_architecture,
    create_trunk,
    resolve_feature_norm,
)
from unirep.sources.schemes import NetworkPlan, Scheme, create_scheme
from unirep.tasks import create_task
from unirep.training.data import CachedSplit, cache_split
from unirep.training.determinism import preserve_deterministic_mode
from unirep.training.optim import OPTIMIZERS, WEIGHT_DECAY_RULE, OptimSettings
from unirep.training.unit_stats_callback import UnitStatsCallback

FSFT_SEED_OFFSET = 10_000  # FSFT's re-initialised layers draw from another seed than the network's first init
STAGE_FILE = "stage.json"


@dataclass
class FSFTSettings:
    """The resolved FSFT stage: epochs, learning rates, and the feature size after FSFT-DR (None: unchanged)."""

    epochs: int
    lr: float
    lr_factor: float
    reinit: bool
    dr_divisor: int | None


@dataclass
class TrainedNetwork:
    plan: NetworkPlan
    network: SourceNetwork
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class SourceRunResult:
    """What a run produced; `checkpoint` is None on ranks other than 0."""

    out: Path
    scheme: str
    label_sets: list[LabelSet]
    networks: list[TrainedNetwork]
    feature_norm: str
    data_config: DataConfig
    metrics: dict
    checkpoint: Path | None
    seconds: float


def train_source(cfg: DictConfig, callbacks: Sequence[Callback] = ()) -> SourceRunResult:
    """Train the scheme `cfg.scheme` and write its unirep checkpoint into `run_dir(cfg)`.

    Args:
        cfg: a resolved SourceRunConfig (see `load_source_config`).
        callbacks: extra Lightning callbacks for every fit (e.g. early stopping, LR monitors).

    Example:
        >>> result = train_source(load_source_config("configs/sources/reference.yaml", ["optim.epochs=1"]))
        >>> create_backbone(str(result.out)).num_features
    """
    start = time.perf_counter()
    scheme = create_scheme(cfg.scheme)
    check_architecture(cfg.model.architecture)  # fail in one line before any data is read
    optim_settings(cfg, cfg.optim.lr)  # likewise for the optimizer's name
    task = create_task(cfg.data.task)
    data_config = DataConfig(input_size=cfg.data.input_size, mean=tuple(cfg.data.mean), std=tuple(cfg.data.std),
                             interpolation="bilinear", crop_pct=1.0)
    world = source_world(cfg)
    train_images = subset(task.split("train"), cfg.data.train_size, cfg.seed, "train")
    val_images = subset(task.split("val"), cfg.data.val_size, cfg.seed, "val")
    context = VariationContext(task.name, tuple(task.card.classes), train_images, cfg.data.input_size)
    # Rank 0 builds them (k-means extracts features of the source images) and every rank trains on the same ones.
    label_sets = world.on_zero(lambda: build_label_sets(cfg.label_sets, context))
    plans = scheme.plan(label_sets)
    fsft = resolve_fsft(cfg, scheme, len(label_sets))
    feature_norm = resolve_feature_norm(cfg.feature_norm, len(plans))
    out = run_dir(cfg)
    finished = finished_run(cfg, out, scheme, label_sets, plans, feature_norm, data_config)
    if finished is not None:
        return finished
    if rank_zero_only.rank == 0:  # only now, with the config checked, is the output folder touched
        ensure_writable_dir(out)
        (out / METADATA_FILE).unlink(missing_ok=True)  # an unfinished run must never look finished
        save_config(cfg, out / "config.yaml")
    train, val = world.on_zero(lambda: (
        cache_split(train_images, data_config, f"{task.name} train @{cfg.data.input_size}px"),
        cache_split(val_images, data_config, f"{task.name} val @{cfg.data.input_size}px")))
    loss_weights = {ls.name: float(spec.loss_weight) for ls, spec in zip(label_sets, cfg.label_sets, strict=True)}
    if cfg.diagnostics.unit_stats:  # one instance for every fit: its history holds the rows of all of them
        callbacks = [*callbacks, UnitStatsCallback(val.images[:cfg.diagnostics.images],
                                                   transform=data_config.normalize_batch,
                                                   target=lambda module: module.network)]
    trained = [train_network(plan, cfg, data_config, train, val, fsft, loss_weights, out, callbacks)
               for plan in plans]
    result = SourceRunResult(out, scheme.name, label_sets, trained, feature_norm, data_config, {}, None, 0.0)
    if rank_zero_only.rank == 0:
        result.metrics = {t.plan.name: source_metrics(t.network, val, t.plan.label_sets, data_config)
                          for t in trained}
        # Rounded here, as the checkpoint stores it: a finished run read back must report the same time (a fresh
        # 0.449 s rounded to 0.4 by the comparison table, but stored as 0.45 and read back as 0.5, failed
        # tests/sources/test_compare_seeds.py's resume check).
        result.seconds = round(time.perf_counter() - start, 2)
        result.checkpoint = export_checkpoint(result, cfg, task, train, val, fsft)
    return result


def source_world(cfg: DictConfig) -> World:
    """The processes of a distributed run (`trainer.strategy=ddp trainer.devices=N`), started before the first fit,
    so that what each stage needs (label sets, cached splits) is made once on rank 0 and sent to the others; the
    Trainer then uses these processes. Before, the Trainer started them at its first fit and every copy of the
    command built its own label sets and cache. Spawn-based and model-sharding strategies keep Lightning's own
    launch at the fit (unirep.distributed.SCRIPT_STRATEGIES)."""
    t = cfg.trainer
    settings = WorldSettings(t.accelerator, t.devices, t.strategy, t.num_nodes, "trainer.")
    if t.strategy not in SCRIPT_STRATEGIES:
        return World()
    return launch_world(settings)


def finished_run(cfg: DictConfig, out: Path, scheme: Scheme, label_sets: list[LabelSet], plans: list[NetworkPlan],
                 feature_norm: str, data_config: DataConfig) -> SourceRunResult | None:
    """The result of an earlier run of exactly this config that finished in `out`, read from its checkpoint;
    None when there is none (or resume is off), and the run trains or resumes as usual.

    Why: without it a re-run restarted a Lightning fit on every finished stage only to restore it, and re-exported
    the checkpoint, overwriting the recorded training time with the time of that restore."""
    from unirep.backbones.checkpoint import create_source_checkpoint

    if not cfg.resume or not (out / METADATA_FILE).is_file():
        return None
    try:
        checkpoint = create_source_checkpoint(str(out))
    except WeightsError:
        return None  # interrupted while writing, or damaged: training resumes its stages and rewrites it
    metadata = checkpoint.metadata
    same_config = _without_diagnostics(metadata.get("training")) == _without_diagnostics(to_container(cfg))
    # A run trained under another weight-decay rule (before the rule was recorded) is not this config's run.
    same_config = same_config and (metadata.get("optimizer") or {}).get("weight_decay_rule") == WEIGHT_DECAY_RULE
    if not same_config or [entry["name"] for entry in metadata["networks"]] != [plan.name for plan in plans]:
        return None
    networks = [TrainedNetwork(plan, network, dict(entry["seconds"]))
                for plan, network, entry in zip(plans, checkpoint.networks, metadata["networks"], strict=True)]
    return SourceRunResult(out, scheme.name, label_sets, networks, feature_norm, data_config,
                           metadata["source_metrics"], out / METADATA_FILE if rank_zero_only.rank == 0 else None,
                           float(metadata["seconds"]))


def _without_diagnostics(training: dict | None) -> str:
    """A resolved config as compared for reuse: diagnostics (what is logged) never change the weights."""
    return json.dumps({k: v for k, v in (training or {}).items() if k != "diagnostics"}, sort_keys=True)


def resolve_fsft(cfg: DictConfig, scheme: Scheme, num_label_sets: int) -> FSFTSettings | None:
    settings = cfg.fsft
    if not (scheme.fsft or settings.enabled):
        return None
    if scheme.joint:
        raise ConfigError(f"FSFT composes with one-network-per-label-set schemes (reference, muldip), not "
                          f"{scheme.name!r}: set fsft.enabled=false")
    dr = scheme.dr or settings.dr
    divisor = (settings.dr_divisor or max(2, num_label_sets)) if dr else None
    if divisor is not None and divisor < 2:
        raise ConfigError(f"fsft.dr_divisor={divisor} must be >= 2 (FSFT-DR shrinks the feature layer)")
    if dr and not settings.reinit:
        raise ConfigError("FSFT-DR re-initialises the shrunk feature layer: set fsft.reinit=true")
    if not 0 < settings.lr_factor <= 1 or settings.epochs < 1:
        raise ConfigError(f"fsft.lr_factor must be in (0, 1] and fsft.epochs >= 1, got {settings.lr_factor}, "
                          f"{settings.epochs}")
    return FSFTSettings(settings.epochs, settings.lr or cfg.optim.lr, settings.lr_factor, settings.reinit, divisor)


def train_network(plan: NetworkPlan, cfg: DictConfig, data_config: DataConfig, train: CachedSplit, val: CachedSplit,
                  fsft: FSFTSettings | None, loss_weights: dict[str, float], out: Path,
                  callbacks: Sequence[Callback]) -> TrainedNetwork:
    """Fit one network from scratch (or from cfg.model.weights), then its FSFT stage when there is one."""
    seed = cfg.seed + plan.index
    pl.seed_everything(seed, workers=True, verbose=False)
    spec = NetworkSpec(cfg.model.architecture, {ls.name: ls.num_groups for ls in plan.label_sets},
                       to_container(cfg.model.model_kwargs), cfg.model.small_input_stem, cfg.model.feature_dim)
    network = SourceNetwork(spec, trunk=create_trunk(spec, cfg.model.weights))
    datamodule = SourceDataModule(train, val, plan.label_sets, cfg.data.batch_size, seed, cfg.data.num_workers)
    weights = [loss_weights[ls.name] for ls in plan.label_sets]
    base = optim_settings(cfg, cfg.optim.lr)
    augmentation = AugmentSettings(cfg.data.augment, cfg.data.shift, seed)
    trained = TrainedNetwork(plan, network)
    stage_dir = out / "nets" / plan.name
    module = SourceModule(network, data_config, base, augmentation, weights, len(train.images))
    trained.seconds["base"] = fit_stage(module, datamodule, stage_dir / "base", cfg.optim.epochs, cfg, callbacks,
                                        fingerprint={"spec": spec.to_dict(), "optim": asdict(base)})
    if fsft is None:
        return trained
    pl.seed_everything(seed + FSFT_SEED_OFFSET, workers=True, verbose=False)
    if fsft.reinit:
        feature_dim = network.feature_dim // fsft.dr_divisor if fsft.dr_divisor else network.feature_dim
        network = network.with_new_top(max(1, feature_dim))
    settings = optim_settings(cfg, fsft.lr, trunk_lr_factor=fsft.lr_factor)
    module = SourceModule(network, data_config, settings, augmentation, weights, len(train.images))
    trained.seconds["fsft"] = fit_stage(module, datamodule, stage_dir / "fsft", fsft.epochs, cfg, callbacks,
                                        fingerprint={"spec": network.spec.to_dict(), "fsft": asdict(fsft),
                                                     "optim": asdict(settings)})
    trained.network = network
    return trained


def optim_settings(cfg: DictConfig, lr: float, trunk_lr_factor: float = 1.0) -> OptimSettings:
    if cfg.optim.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optim.optimizer must be one of {OPTIMIZERS.list()}, got {cfg.optim.optimizer!r}")
    return OptimSettings(lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.warmup_epochs,
                         cfg.optim.label_smoothing, trunk_lr_factor, cfg.optim.optimizer)


def fit_stage(module: SourceModule, datamodule: SourceDataModule, stage_dir: Path, epochs: int, cfg: DictConfig,
              callbacks: Sequence[Callback], fingerprint: dict) -> float:
    """One Trainer.fit, resumed from `stage_dir/checkpoints/last.ckpt` when present and made with the same
    settings; returns its wall time in seconds."""
    start = time.perf_counter()
    last = stage_dir / "checkpoints" / "last.ckpt"
    key = sha256_json({**fingerprint, "data": to_container(cfg.data), "label_sets": to_container(cfg.label_sets),
                       "seed": cfg.seed, "weights": cfg.model.weights})
    resume = cfg.resume and last.is_file() and _stage_key(stage_dir) == key
    if cfg.resume and last.is_file() and not resume:
        raise ConfigError(f"{stage_dir} holds a run with other settings: choose another `out` or set resume=false "
                          "to start this stage over")
    if rank_zero_only.rank == 0:
        atomic_write_json(stage_dir / STAGE_FILE, {"key": key, "max_epochs": epochs})
    # Lightning switches deterministic algorithms on for the whole process; the caller gets its setting back.
    with quiet_lightning(), preserve_deterministic_mode():
        trainer = make_trainer(cfg, stage_dir, epochs, callbacks)
        # Our own checkpoints hold only tensors and plain values, so the safe loader suffices.
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None, weights_only=True)
    return time.perf_counter() - start


def _stage_key(stage_dir: Path) -> str | None:
    try:
        return json.loads((stage_dir / STAGE_FILE).read_text(encoding="utf-8"))["key"]
    except (OSError, ValueError, KeyError):
        return None


def make_trainer(cfg: DictConfig, stage_dir: Path, epochs: int, callbacks: Sequence[Callback]) -> pl.Trainer:
    t = cfg.trainer
    # Keeps the latest epoch's checkpoint, with last.ckpt a link to it (one copy of the weights on disk).
    checkpoints = ModelCheckpoint(dirpath=stage_dir / "checkpoints", filename="epoch{epoch}", save_last="link",
                                  save_top_k=1, auto_insert_metric_name=False)
    limits = {k: t[k] for k in ("limit_train_batches", "limit_val_batches") if t[k] is not None}
    return pl.Trainer(
        default_root_dir=stage_dir, max_epochs=epochs, accelerator=t.accelerator, devices=t.devices,
        strategy=t.strategy, num_nodes=t.num_nodes, precision=t.precision, deterministic=t.deterministic,
        sync_batchnorm=t.sync_batchnorm, logger=CSVLogger(stage_dir, name="logs", version=0),
        callbacks=[checkpoints, *callbacks], enable_progress_bar=t.progress_bar, log_every_n_steps=t.log_every_n_steps,
        use_distributed_sampler=False,  # SourceDataModule shards with its own DistributedSampler
        num_sanity_val_steps=0, enable_model_summary=False, **limits,
    )


@torch.no_grad()
def source_metrics(network: SourceNetwork, split: CachedSplit, label_sets: Sequence[LabelSet],
                   data_config: DataConfig, batch_size: int = 512) -> dict:
    """Top-1 and mean per-class accuracy (%) of each head on `split` (the source val split), in the network's
    dtype (float32; float64 under trainer.precision=64-true)."""
    device, dtype = next(network.parameters()).device, next(network.parameters()).dtype
    was_training = network.training
    network.eval()
    logits: dict[str, list[torch.Tensor]] = {ls.name: [] for ls in label_sets}
    for begin in range(0, len(split.images), batch_size):
        batch = data_config.normalize_batch(split.images[begin:begin + batch_size].to(device)).to(dtype)
        for name, out in network(batch).items():
            logits[name].append(out.float().cpu())
    network.train(was_training)
    metrics = {}
    for ls in label_sets:
        y_true, y_pred = ls.relabel(split.labels), torch.cat(logits[ls.name]).argmax(1).numpy()
        metrics[ls.name] = {"top1": Metric.TOP1(y_true, y_pred),
                            "mean_per_class": Metric.MEAN_PER_CLASS(y_true, y_pred), "n": int(len(y_true))}
    return metrics


def export_checkpoint(result: SourceRunResult, cfg: DictConfig, task, train: CachedSplit, val: CachedSplit,
                      fsft: FSFTSettings | None) -> Path:
    """Write the source split manifest and the unirep checkpoint into `result.out`."""
    split = {"task": task.name, "task_manifest": task.manifest.summary(), "train_ids": train.ids, "val_ids": val.ids,
             "train_size": len(train.ids), "val_size": len(val.ids)}
    atomic_write_json(result.out / "source-split.json", split)
    networks = [{"name": t.plan.name, "spec": t.network.spec.to_dict(),
                 "label_sets": [ls.name for ls in t.plan.label_sets], "stages": sorted(t.seconds),
                 "seconds": t.seconds} for t in result.networks]
    metadata = {
        "scheme": result.scheme,
        "feature_norm": result.feature_norm,
        "num_features": sum(t.network.feature_dim for t in result.networks),
        "networks": networks,
        "label_sets": [{**ls.to_dict(), "groups": ls.groups(task.card.classes)} for ls in result.label_sets],
        "architecture": cfg.model.architecture,
        "data_config": result.data_config.to_dict(),
        "data": to_container(cfg.data),
        "training": to_container(cfg),
        "optimizer": asdict(optim_settings(cfg, cfg.optim.lr)),  # as applied, with its weight-decay rule
        "fsft": None if fsft is None else asdict(fsft),
        "source_split": {"file": "source-split.json", "digest": sha256_json(split),
                         "task_manifest": split["task_manifest"], "train_size": split["train_size"],
                         "val_size": split["val_size"]},
        "source_metrics": result.metrics,
        "seconds": result.seconds,  # rounded to 0.01 s where it is measured
        "versions": library_versions(),
    }
    return write_checkpoint(result.out, [(t.plan.name, t.network) for t in result.networks], metadata)
