"""Choosing the learning rate and the number of epochs on val, then the refit that is scored on test.

Selection, phase by phase (unirep.finetune.modes): every candidate learning rate starts from the same model (the
pretrained backbone with the same seeded head, or the model the previous phase selected), trains on the train
split only, and is scored on val after every epoch with the task's metric; it stops early after `patience` epochs
without a better val score. The candidate with the best val score wins (ties: the one listed first), and its best
epoch is the epoch count. The test split never takes part: it reaches this module only after selection, sealed,
and without labels (unirep.protocols.SealedImages).

LP-FT's linear-probe head (`lp_head=probe`) is chosen the probe's way instead: C on val over the probe's grid, the
head fitted on train (unirep.finetune.probe_head).

Refit policy (`finetune.refit`, recorded in every record's hyperparameters):
- "train+val" (default, as the linear probe does): retrain from the pretrained weights on train+val, every phase
  with its selected learning rate for its selected number of epochs, on the schedule of the selection run (the
  cosine decay of `max_epochs`, stopped after the selected epoch); a linear-probe head is refitted on train+val
  features with its selected C. More data, no early stopping left to do.
- "train": keep the train-only model of the selected epoch (the weights that scored the best val score).

Selection is saved as soon as it ends (unirep.finetune.saved_selection, in the run directory) and a re-run of the
same job starts from it, so a failure in the refit or the test prediction does not lose the sweep.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import DictConfig

from unirep.backbones.base import Backbone
from unirep.errors import ConfigError
from unirep.finetune.data import (
    AugmentedImages,
    FineTuneDataModule,
    cached_dataset,
    check_labels,
    concat_images,
    train_transform,
)
from unirep.finetune.modes import Phase, create_phases
from unirep.finetune.module import Classifier, FineTuneModule, trainable_names
from unirep.finetune.probe_head import linear_probe_head
from unirep.finetune.saved_selection import SavedSelection, Selection
from unirep.finetune.stages import StagePartition, partition_stages
from unirep.metrics import Metric
from unirep.quiet import quiet_lightning
from unirep.runtime import resolve_device
from unirep.tasks.base import ImageSet
from unirep.training.data import CachedSplit, cache_split
from unirep.training.determinism import preserve_deterministic_mode
from unirep.training.optim import OPTIMIZERS, OptimSettings
from unirep.training.unit_stats_callback import UnitStatsCallback

REFIT_POLICIES = ("train+val", "train")


@dataclass
class PhaseChoice:
    """What a phase selected on val: learning rate and epoch count (SGD phases) or C (the linear-probe head), the
    best val score, and every candidate's best val score (`sweep`)."""

    phase: str
    lr: float | None
    epochs: int | None
    val_score: float
    sweep: dict[str, float]
    trained_stages: list[str]
    lrs: list[float]
    C: float | None = None


@dataclass
class FineTuneResult:
    """The model to score on test and how it was chosen. `curve`: one entry per epoch of every fit."""

    net: Classifier
    choices: list[PhaseChoice]
    curve: list[dict]
    refit: str
    precision: str
    world_size: int
    phases: list[Phase]
    timings: dict[str, float] = field(default_factory=dict)
    selection_file: str | None = None  # where the selection was saved (or read from); None: not saved
    selection_resumed: bool = False  # True: read from `selection_file`, no sweep ran in this call


@dataclass
class _Run:
    """Everything the phases of one fine-tuning run share."""

    backbone: Backbone
    partition: StagePartition
    num_classes: int
    train: ImageSet
    val: ImageSet
    metric: Metric
    ft: DictConfig
    seed: int
    curve: list[dict] = field(default_factory=list)
    world_size: int = 1
    datasets: dict = field(default_factory=dict)  # built on first use: the probe-only phases need none

    def new_net(self, state: dict[str, torch.Tensor]) -> Classifier:
        net = Classifier(copy.deepcopy(self.backbone), self.num_classes, self.seed)
        net.load_state_dict(state)
        return net

    def unit_stats_images(self) -> torch.Tensor | None:
        """The first `ft.unit_stats_images` val images (uint8, at the backbone's size), or None when off."""
        n = int(self.ft.get("unit_stats_images", 0) or 0)
        if n <= 0:
            return None
        if "unit_stats" not in self.datasets:
            size = self.backbone.data_config.input_size
            self.datasets["unit_stats"] = cache_split(self.val, self.backbone.data_config, f"val @{size}px").images[:n]
        return self.datasets["unit_stats"]

    def dataset(self, name: str):
        if name not in self.datasets:
            size = self.backbone.data_config.input_size
            self.datasets[name] = {
                "train": lambda: _train_dataset(self.train, None, self.backbone, self.ft),
                "train+val": lambda: _train_dataset(self.train, self.val, self.backbone, self.ft),
                "val": lambda: cached_dataset(cache_split(self.val, self.backbone.data_config, f"val @{size}px")),
            }[name]()
        return self.datasets[name]


def finetune(backbone: Backbone, train: ImageSet, val: ImageSet, num_classes: int, metric: Metric,
             ft: DictConfig, seed: int, saved: SavedSelection | None = None) -> FineTuneResult:
    """Select learning rates and epochs on `val`, then refit by `ft.refit`; `backbone` itself is not changed.
    With `saved`, a selection saved there by an earlier call with the same inputs is used instead of a sweep, and
    a new selection is saved there before the refit starts.

    Example:
        >>> result = finetune(create_backbone("random:test_resnet", input_size=32), task.split("train"),
        ...                   task.split("val"), 10, Metric.TOP1, cfg.finetune, seed=0)
        >>> result.choices[-1].lr, result.choices[-1].epochs
    """
    phases, partition = _plan(backbone, train, val, num_classes, ft)
    run = _Run(backbone, partition, num_classes, train, val, metric, ft, seed)
    pristine = Classifier(copy.deepcopy(backbone), num_classes, seed).state_copy()
    keep_state = ft.refit == "train"  # the selected weights are what gets scored
    restored = saved.load(with_state=keep_state) if saved is not None else None
    if restored is None:
        choices, state, select_s = _select(run, phases, pristine)
        if saved is not None and rank_zero_only.rank == 0:
            saved.save(Selection([asdict(c) for c in choices], run.curve, select_s, run.world_size,
                                 state if keep_state else None),
                       {"backbone": backbone.name, "mode": ft.mode, "seed": seed})
    else:
        choices = [PhaseChoice(**c) for c in restored.choices]
        state, select_s = restored.state, restored.select_s
        run.curve, run.world_size = list(restored.curve), restored.world_size
        _progress(f"finetune: selection read from {saved.path} (no sweep: {', '.join(_describe(c) for c in choices)})")
    timings = {"select_s": select_s}
    net = run.new_net(state if keep_state else pristine)
    if ft.refit == "train+val":
        start = time.perf_counter()
        for phase, choice in zip(phases, choices, strict=True):
            SOLVERS[phase.solver].refit(run, phase, choice, net)
        timings["refit_s"] = time.perf_counter() - start
    return FineTuneResult(net, choices, run.curve, ft.refit, resolve_precision(ft), run.world_size, phases, timings,
                          None if saved is None else str(saved.path), restored is not None)


def _select(run: _Run, phases: list[Phase], pristine: dict) -> tuple[list[PhaseChoice], dict, float]:
    """Every phase's selection in turn, each from the model the previous one selected; returns the choices, the
    last phase's selected weights and the seconds it took."""
    start = time.perf_counter()
    choices: list[PhaseChoice] = []
    state = pristine
    for phase in phases:
        choice, state = SOLVERS[phase.solver].select(run, phase, state)
        choices.append(choice)
    return choices, state, time.perf_counter() - start


def _describe(choice: PhaseChoice) -> str:
    return f"{choice.phase} C={choice.C:g}" if choice.C is not None else \
        f"{choice.phase} lr={choice.lr:g} epochs={choice.epochs}"


def _plan(backbone: Backbone, train: ImageSet, val: ImageSet, num_classes: int,
          ft: DictConfig) -> tuple[list[Phase], StagePartition]:
    """The phases and stages of this run, after every check that can fail before any training starts."""
    if ft.refit not in REFIT_POLICIES:
        raise ConfigError(f"finetune.refit={ft.refit!r} must be one of {list(REFIT_POLICIES)}")
    if ft.optimizer not in OPTIMIZERS:
        raise ConfigError(f"finetune.optimizer={ft.optimizer!r} is not one of {OPTIMIZERS.list()}")
    check_labels(train, num_classes, "train")
    check_labels(val, num_classes, "val")
    phases = create_phases(ft)
    partition = partition_stages(backbone)
    for phase in phases:
        if phase.last_k is not None and phase.last_k > len(partition.stages):
            raise ConfigError(f"finetune.last_k={phase.last_k}: backbone {backbone.name!r} has "
                              f"{len(partition.stages)} stages ({', '.join(s.name for s in partition.stages)}); "
                              "use mode=full to train them all")
    return phases, partition


def _select_sgd(run: _Run, phase: Phase, start_state: dict) -> tuple[PhaseChoice, dict]:
    """One fit per candidate learning rate from `start_state`; the best val score wins (ties: listed first)."""
    best: tuple[float, FineTuneModule] | None = None
    sweep: dict[str, float] = {}
    for lr in phase.lrs:
        began = time.perf_counter()
        module = fit_phase(run.new_net(start_state), run.partition, phase, lr, phase.max_epochs,
                           run.dataset("train"), run.dataset("val"), run.metric, run.ft, run.seed,
                           unit_stats_images=run.unit_stats_images())
        run.world_size = module.trainer.world_size
        run.curve.extend({"phase": phase.name, "stage": "select", "candidate_lr": lr, **e} for e in module.curve)
        sweep[f"{lr:g}"] = module.best_score
        _progress(f"finetune {phase.name} lr={lr:g}: best val {module.best_score:.2f} at epoch {module.best_epoch} "
                  f"of {len(module.curve)} ({time.perf_counter() - began:.0f} s)")
        if best is None or module.best_score > best[1].best_score:  # strict: ties keep the first listed
            best = (lr, module)
    assert best is not None  # create_phases refuses empty learning-rate lists
    lr, module = best
    stages = [s.name for s in _trained_stages(run.partition, phase)]
    choice = PhaseChoice(phase.name, lr, module.best_epoch, module.best_score, sweep, stages, list(phase.lrs))
    return choice, module.best_state


def _refit_sgd(run: _Run, phase: Phase, choice: PhaseChoice, net: Classifier) -> None:
    module = fit_phase(net, run.partition, phase, choice.lr, choice.epochs, run.dataset("train+val"), None,
                       run.metric, run.ft, run.seed, unit_stats_images=run.unit_stats_images())
    run.curve.extend({"phase": phase.name, "stage": "refit", "candidate_lr": choice.lr, **e} for e in module.curve)


def _select_probe(run: _Run, phase: Phase, start_state: dict) -> tuple[PhaseChoice, dict]:
    """The head from unirep's linear probe on the frozen features: C chosen on val, fitted on train."""
    net = run.new_net(start_state)
    began = time.perf_counter()
    C, val_score = linear_probe_head(net, run.train, run.val, run.metric, None, _device(run.ft))
    run.curve.append({"phase": phase.name, "stage": "select", "C": C, "val_score": val_score})
    _progress(f"finetune {phase.name}: C={C:.3g}, val {val_score:.2f} ({time.perf_counter() - began:.0f} s)")
    return PhaseChoice(phase.name, None, None, val_score, {f"{C:g}": val_score}, [], [], C=C), net.state_copy()


def _refit_probe(run: _Run, phase: Phase, choice: PhaseChoice, net: Classifier) -> None:
    linear_probe_head(net, concat_images(run.train, run.val), None, run.metric, choice.C, _device(run.ft))
    run.curve.append({"phase": phase.name, "stage": "refit", "C": choice.C})


@dataclass(frozen=True)
class _Solver:
    select: Callable[[_Run, Phase, dict], tuple[PhaseChoice, dict]]
    refit: Callable[[_Run, Phase, PhaseChoice, Classifier], None]


# Keyed by Phase.solver: Lightning SGD fits, or the head from unirep's linear probe (L-BFGS).
SOLVERS = {"sgd": _Solver(_select_sgd, _refit_sgd), "probe": _Solver(_select_probe, _refit_probe)}


def fit_phase(net: Classifier, partition: StagePartition, phase: Phase, lr: float, epochs: int, train_set, val_set,
              metric: Metric, ft: DictConfig, seed: int, unit_stats_images: torch.Tensor | None = None
              ) -> FineTuneModule:
    """One Trainer.fit of `net` (in place) with `phase`'s stages trainable, for at most `epochs` epochs; with a
    `val_set`, scored on val every epoch and stopped early after `phase.patience` epochs without improvement.
    With `unit_stats_images`, the backbone's unit statistics on them join each epoch's curve entry.
    Returns the module, which holds the curve and the best epoch's weights."""
    pl.seed_everything(seed, workers=True, verbose=False)
    optim = optim_settings(ft, lr)
    trainable = trainable_names(net, _backbone_params(net, partition, phase))
    module = FineTuneModule(net, trainable, metric, optim, schedule_epochs=phase.max_epochs,
                            freeze_bn_stats=phase.freeze_bn_stats)
    data = FineTuneDataModule(train_set, val_set, ft.batch_size, seed, ft.num_workers)
    callbacks = [] if val_set is None else [EarlyStopping("val/score", mode="max", patience=phase.patience)]
    units = None
    if unit_stats_images is not None:
        units = UnitStatsCallback(unit_stats_images, transform=net.backbone.data_config.normalize_batch,
                                  target=lambda module: module.net.backbone)
        callbacks.append(units)
    # Lightning switches deterministic algorithms on (or off) for the whole process; the caller gets its setting back.
    with quiet_lightning(), preserve_deterministic_mode():
        trainer = pl.Trainer(
            max_epochs=epochs, accelerator=ft.accelerator, devices=ft.devices, strategy=ft.strategy,
            num_nodes=ft.num_nodes, precision=resolve_precision(ft), deterministic=ft.deterministic, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
            num_sanity_val_steps=0, use_distributed_sampler=False,  # FineTuneDataModule shards itself
            limit_val_batches=None if val_set is not None else 0,
        )
        trainer.fit(module, datamodule=data)
    if units is not None:  # the callback's rows carry Lightning's 0-based epoch; the curve counts from 1
        by_epoch = {row["epoch"] + 1: row for row in units.history}
        for entry in module.curve:
            entry.update({k: v for k, v in by_epoch.get(entry["epoch"], {}).items() if k != "epoch"})
    return module


def optim_settings(ft: DictConfig, lr: float) -> OptimSettings:
    """The optimiser settings of one fit at learning rate `lr` (recorded with the run; unirep.training.optim)."""
    return OptimSettings(lr=lr, momentum=ft.momentum, weight_decay=ft.weight_decay, warmup_epochs=ft.warmup_epochs,
                         label_smoothing=ft.label_smoothing, optimizer=ft.optimizer)


def _backbone_params(net: Classifier, partition: StagePartition, phase: Phase) -> dict:
    """`partition` names parameters of the original backbone; map them onto this copy by name."""
    own = dict(net.backbone.named_parameters())
    return {name: own[name] for name in partition.trainable(phase.last_k)}


def _trained_stages(partition: StagePartition, phase: Phase):
    if phase.last_k is None:
        return partition.stages
    return partition.stages[len(partition.stages) - phase.last_k:] if phase.last_k else []


def _train_dataset(train: ImageSet, val: ImageSet | None, backbone: Backbone, ft: DictConfig):
    images = train if val is None else concat_images(train, val)
    if ft.augment:
        return AugmentedImages(images, train_transform(backbone.data_config, ft))
    size = backbone.data_config.input_size
    label = "train" if val is None else "train+val"
    split: CachedSplit = cache_split(images, backbone.data_config, f"{label} @{size}px")
    return cached_dataset(split)


def uses_gpu(ft: DictConfig) -> bool:
    return resolve_device(ft.accelerator, setting="finetune.accelerator").type == "cuda"


def _device(ft: DictConfig) -> str:
    return "cuda" if uses_gpu(ft) else "cpu"


def resolve_precision(ft: DictConfig) -> str:
    """`auto`: bf16-mixed on CPU; on GPU, AMP in bf16 where the GPU has it, else fp16 AMP (16-mixed)."""
    if ft.precision != "auto":
        return str(ft.precision)
    if uses_gpu(ft):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed"


def _progress(message: str) -> None:
    if rank_zero_only.rank == 0:
        print(message, file=sys.stderr, flush=True)
