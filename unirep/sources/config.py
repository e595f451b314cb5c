"""Typed configuration of a source-training run: defaults -> configs/sources/<preset>.yaml -> CLI dotlist.

Every field has a default except `scheme`; the resolved config is saved as `<out>/config.yaml` and inside the
checkpoint's metadata. Example override: `unirep train-source configs/sources/muldip.yaml optim.epochs=2
label_sets.1.omega=3 trainer.precision=bf16-mixed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig

from unirep.config import load_config


@dataclass
class LabelSetConfig:
    """One label set (see unirep.sources.label_sets): `kind` is a VARIATIONS name."""

    kind: str = "original"
    name: str | None = None  # default: derived from kind (original, hierarchy-l1, kmeans-w4, random-w4)
    hierarchy: str | None = None  # hierarchy: YAML file (default tasks/hierarchies/<task>.yaml)
    level: int = 1  # hierarchy: 1 = each class's parent, 2 = grandparent...
    omega: int | None = None  # kmeans/random: number of groups, 2 <= omega < classes
    features: str = "raw-pixels"  # kmeans: backbone whose class-mean features are clustered
    seed: int = 0  # kmeans/random
    loss_weight: float = 1.0  # multitask: weight of this head's cross-entropy in the joint loss


@dataclass
class SourceDataConfig:
    """The source task's examples: its registered train split (training) and val split (source metrics)."""

    task: str = "fashion-mnist"
    train_size: int | None = None  # stratified, seeded subset of the train split (None: all of it)
    val_size: int | None = None
    input_size: int = 32
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    augment: bool = True  # random flips and +-`shift` pixel translations, fixed per (seed, epoch, example)
    shift: int = 2
    batch_size: int = 64  # global batch: split evenly over the devices
    num_workers: int = 0  # tensors are cached in memory: workers rarely pay off


@dataclass
class ModelConfig:
    """The network: any timm architecture as trunk, then the feature layer (whose output is the
    representation, like AlexNet's fc7) and one linear head per label set."""

    architecture: str = "unirep_resnet18_half"  # any timm name; this one is registered by unirep.sources.networks
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to timm.create_model
    weights: str | None = None  # None: random init; "hub": timm's pretrained weights; else a local file
    small_input_stem: bool = True  # adapt the stem to small inputs (unirep.sources.networks.STEM_ADAPTERS)
    feature_dim: int | None = None  # size of the feature layer (None: the trunk's feature size)


@dataclass
class OptimConfig:
    # AdamW by default: on short CPU budgets it learns much faster than SGD (Fashion-MNIST, 2,000 images, 3 epochs:
    # 77 % vs 61 % val top-1); `optimizer=sgd lr=0.1 weight_decay=5e-4` is the papers' choice.
    optimizer: str = "adamw"  # adamw | sgd (nesterov momentum)
    lr: float = 2e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.05
    epochs: int = 6
    warmup_epochs: float = 0.5  # linear warm-up, then cosine decay to 0 (per step)
    label_smoothing: float = 0.0


@dataclass
class FSFTConfig:
    """Focused self fine-tuning: re-initialise and retrain the last two layers (feature layer + head) on the
    network's own label set while the earlier layers train at `lr_factor` x the learning rate."""

    enabled: bool = False
    epochs: int = 3
    lr: float | None = None  # default: optim.lr
    lr_factor: float = 0.1
    reinit: bool = True
    dr: bool = False  # FSFT-DR: shrink the feature layer to feature_dim // dr_divisor
    dr_divisor: int | None = None  # default: the number of label sets (omega + 1), so MulDiP's concat keeps n dims


@dataclass
class TrainerConfig:
    """Passed to lightning.Trainer (distributed: strategy=ddp, devices=N)."""

    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"  # bf16-mixed (CPU or GPU), 16-mixed (GPU AMP), 64-true (float64: exact checks)
    deterministic: Any = True  # "warn" on GPUs where an op has no deterministic kernel
    sync_batchnorm: bool = False  # GPUs with ddp only (torch's SyncBatchNorm needs GPU tensors)
    progress_bar: bool = True
    log_every_n_steps: int = 10
    limit_train_batches: Any = None  # for quick checks: a fraction or a number of batches
    limit_val_batches: Any = None


@dataclass
class DiagnosticsConfig:
    """Unit statistics logged per epoch next to the training curves (unirep.training.unit_stats_callback: dead
    share per stage, dormant ratio, first-layer noise score); measured on the first `images` source val images
    (a forward pass of 256 images: measured ~4-5 % of an epoch on 2,000 training images at 32 px, ~2 % on the
    default 5,000). Diagnostics never change the weights, so a finished run is reused whatever they are set to."""

    unit_stats: bool = True
    images: int = 256


@dataclass
class SourceRunConfig:
    """A source-training run. `scheme` names a SCHEMES entry (reference, muldip, multitask, fsft, fsft-dr)."""

    scheme: str = MISSING
    out: str | None = None  # run directory; default runs/sources/<scheme>
    seed: int = 0
    resume: bool = True  # continue from each stage's last.ckpt when the run directory has one
    feature_norm: str = "auto"  # linf | none | auto (linf when the backbone concatenates several networks)
    label_sets: list[LabelSetConfig] = field(default_factory=lambda: [LabelSetConfig()])
    data: SourceDataConfig = field(default_factory=SourceDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    fsft: FSFTConfig = field(default_factory=FSFTConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)


def load_source_config(path: str | Path | None = None, dotlist: list[str] | None = None,
                       **overrides: Any) -> DictConfig:
    """OmegaConf.merge(SourceRunConfig defaults, YAML preset, keyword overrides, CLI dotlist), type-checked.

    Example:
        >>> cfg = load_source_config("configs/sources/muldip.yaml", ["optim.epochs=1"])
        >>> cfg.scheme, [ls.kind for ls in cfg.label_sets]
        ('muldip', ['original', 'kmeans', 'hierarchy'])
    """
    return load_config(SourceRunConfig, path, dotlist, **overrides)


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.out or f"runs/sources/{cfg.scheme}")
