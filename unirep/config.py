"""Typed run configuration: dataclass defaults -> YAML file -> CLI dotlist (dinov2-style), resolved and saved
next to the results of every run.

Backbones are given as names or as mappings with per-backbone settings, e.g.
    backbones:
      - mobilenetv2_100.packaged_in1k
      - {name: raw-pixels, input_size: 32}
      - {name: resnet18, weights: /path/to/resnet18.safetensors}
      - {name: resnet50.a1_in1k, pretrained: true, layer: stage3}
      - random:resnet18                       # the untrained architecture, filed under this name
On the command line the same settings are options after the backbone's name (unirep.commands.backbone_options):
`unirep eval resnet18 --weights /path/to/resnet18.safetensors --layer stage3`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from unirep.errors import ConfigError, yaml_problem
from unirep.fileio import atomic_write_text
from unirep.prototypes.settings import PrototypeSettings  # a torch-free dataclass (unirep.prototypes imports no torch)

# The name prefix of random-init backbones (unirep.backbones.baselines); results filed under it say so.
RANDOM_PREFIX = "random:"


@dataclass
class BackboneSpec:
    """One backbone to evaluate. Unset fields keep the backbone's own defaults."""

    name: str = MISSING
    weights: str | None = None
    pretrained: bool = False
    layer: str | None = None
    input_size: int | None = None
    seed: int = 0
    label: str | None = None  # the name results are filed under (default: name, plus @layer when set)

    @property
    def display_name(self) -> str:
        if self.label:
            return self.label
        return f"{self.name}@{self.layer}" if self.layer else self.name


@dataclass
class LinearProbeConfig:
    c_min_exp: float = -6.0
    c_max_exp: float = 5.0
    n_c: int = 45
    max_iter: int = 1000
    device: str = "cpu"


@dataclass
class KNNProbeConfig:
    ks: list[int] = field(default_factory=lambda: [1, 3, 5, 10, 20, 50, 100, 200])
    temperature: float = 0.07


@dataclass
class FewShotConfig:
    """Low-data protocols (`linear-5shot`, `knn-10shot`, `linear-1k`...): subsets of the train split drawn per
    seed; hyperparameters chosen on a val part carved out of the same budget (`val_fraction` of each class,
    at least one example), never from test. With one example per class there is nothing to validate on, so
    the probe's `fallback` setting is used (and recorded)."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    val_fraction: float = 0.2
    vtab_train: int = 800
    vtab_val: int = 200
    fallback_C: float = 1.0
    fallback_k: int = 1


@dataclass
class FineTuneConfig:
    """Fine-tuning (`finetune` protocol, `unirep finetune`; unirep.finetune). Defaults are sized for 2 CPU cores.

    Every candidate learning rate trains on train with early stopping on val; the best val score picks the
    learning rate and the epoch count; `refit` says what is scored on test: "train+val" retrains from the
    pretrained weights on train+val with the chosen settings, "train" keeps the train-only model of the best epoch.
    Modes: full (everything trains), last-k (the last `last_k` stages and the head), lp-ft (the head first: unirep's
    linear probe with C chosen on val, or with `lp_head=sgd` a head-only phase over `lp_lrs`/`lp_max_epochs`; then
    everything at `lrs` x `lpft_lr_factor`; Kumar et al. 2022).
    """

    mode: str = "full"
    last_k: int = 1
    lrs: list[float] = field(default_factory=lambda: [0.03, 0.01, 0.003])
    max_epochs: int = 6
    patience: int = 2  # epochs without a better val score before a candidate stops
    refit: str = "train+val"
    lp_head: str = "probe"  # lp-ft's head: probe (unirep's linear probe) | sgd (a head-only SGD phase)
    lp_lrs: list[float] = field(default_factory=lambda: [0.1])
    lp_max_epochs: int = 4
    lpft_lr_factor: float = 0.1
    # Batch-norm running statistics while fine-tuning: "train" updates them from each batch, "frozen" keeps the
    # pretrained ones (affine parameters still train), "auto" = frozen for lp-ft, whose head was fitted on features
    # made with the pretrained statistics, train otherwise.
    bn_stats: str = "auto"
    optimizer: str = "sgd"  # sgd (momentum, nesterov) | adamw
    momentum: float = 0.9
    weight_decay: float = 1e-4  # on weights only, not on biases and norm parameters
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    batch_size: int = 64  # global batch, split over the devices
    augment: bool = True  # timm's training transform (random resized crop, flip, ...); eval: resize + centre crop
    scale: list[float] = field(default_factory=lambda: [0.5, 1.0])
    ratio: list[float] = field(default_factory=lambda: [0.75, 1.3333])
    hflip: float = 0.5
    color_jitter: float = 0.0
    auto_augment: str | None = None  # e.g. rand-m9-mstd0.5 (timm's RandAugment)
    precision: str = "auto"  # auto: bf16-mixed on CPU, AMP on GPU (bf16-mixed, or 16-mixed without bf16)
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"  # ddp: Lightning starts the command once per device; rank 0 writes the records
    num_nodes: int = 1
    deterministic: Any = True
    num_workers: int = 0
    # > 0: after every epoch, dead/dormant units per stage and the first-layer noise score of the backbone being
    # fine-tuned, measured on the first N val images (unirep.training.unit_stats_callback), join the record's curve.
    unit_stats_images: int = 0


@dataclass
class OodProtocolConfig:
    """The `ood` protocol (unirep.ood.protocol): OoD benchmarks scored after the tasks, records as `unirep ood`'s.
    benchmarks: card names or paths (empty: every shipped benchmark whose ID task is one of the run's tasks); scores:
    empty for every registered score the classifier allows; classifier: linear | zero-shot (a clip: backbone) | none."""

    benchmarks: list[str] = field(default_factory=list)
    scores: list[str] = field(default_factory=list)
    classifier: str = "linear"


@dataclass
class DetectionProtocolConfig:
    """The `detection` protocol (unirep.detection.protocol): the backbone frozen, its maps at the last `num_levels`
    stages cached once, torchvision's FPN + RetinaNet head trained on train (AdamW, cosine over `max_epochs`) for
    each of `lrs`; val mAP@[.5:.95] every `val_every` epochs picks the learning rate and the epoch; test scored once.
    The Trainer runs where fine-tuning's does (finetune.accelerator / devices / strategy)."""

    lrs: list[float] = field(default_factory=lambda: [0.003, 0.001])
    max_epochs: int = 12
    val_every: int = 3
    batch_size: int = 16
    weight_decay: float = 1e-4
    input_size: int = 128  # images resized to input_size x input_size before the backbone
    num_levels: int = 3
    fpn_channels: int = 64
    anchor_scale: float = 4.0  # anchor side = anchor_scale x the level's stride (x 2^0, 2^1/3, 2^2/3)


@dataclass
class EvalConfig:
    """Evaluate backbones on tasks with probes/estimators; one record per (backbone, task, protocol, seed)."""

    backbones: list[Any] = MISSING
    tasks: list[str] = MISSING
    protocols: list[str] = field(default_factory=lambda: ["linear", "knn"])
    seeds: list[int] = field(default_factory=lambda: [0])
    out: str = "runs/eval"
    cache_dir: str = "~/.cache/unirep/features"
    # 2-core budget: backbones whose native input is larger (ImageNet's 224) run at this size; smaller ones
    # (raw pixels at 32, source networks trained at 32) keep theirs. A backbone's own `input_size` wins.
    max_input_size: int | None = 64
    batch_size: int = 128
    num_workers: int = 0
    # One process per device (unirep.distributed, on Lightning Fabric): `strategy=ddp devices=N` shards extraction
    # over N processes and deals the probe jobs among them; only global rank 0 writes. `device` is the device of a
    # one-process run; in a distributed one, "auto" is each process's own device.
    strategy: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    accelerator: str = "auto"
    device: str = "auto"
    precision: str = "fp32"
    # channels_last: NHWC convolutions, 1.3-1.9x faster for MobileNetV2 / EfficientNet-Lite0 at 64 px on 2 CPU
    # cores (fp32 numerics, only the summation order changes; part of the feature cache key).
    channels_last: bool = True
    force: bool = False
    linear: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    knn: KNNProbeConfig = field(default_factory=KNNProbeConfig)
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)
    finetune: FineTuneConfig = field(default_factory=FineTuneConfig)
    ood: OodProtocolConfig = field(default_factory=OodProtocolConfig)
    detection: DetectionProtocolConfig = field(default_factory=DetectionProtocolConfig)
    prototype: PrototypeSettings = field(default_factory=PrototypeSettings)  # prototype / prototype-band protocols


def load_config(schema: type, path: str | Path | None = None, dotlist: list[str] | None = None,
                **overrides: Any) -> DictConfig:
    """OmegaConf.merge(schema defaults, YAML file, keyword overrides, CLI dotlist); type-checked.

    Every problem is one ConfigError naming where it is (the file, or the command line) and the full key, raised
    before any work starts.

    Example:
        >>> cfg = load_config(EvalConfig, "configs/eval-offline.yaml", ["linear.n_c=10"])
    """
    cfg = OmegaConf.structured(schema)
    if path is not None:
        cfg = _merge(cfg, _read_yaml_file(path), f"in {path}")
    clean = {k: v for k, v in overrides.items() if v is not None}
    if clean:
        cfg = _merge(cfg, OmegaConf.create(clean), "on the command line")
    if dotlist:
        try:
            # merge_with_dotlist (not from_dotlist + merge) so list items can be set by index: `label_sets.1.omega=3`
            cfg.merge_with_dotlist(list(dotlist))
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            raise ConfigError(f"invalid configuration on the command line: {_describe(exc)} (the settings and their "
                              "types: the dataclasses in unirep/config.py, examples in configs/)") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing required setting(s) {missing}: give them in the YAML file or as key=value")
    for key, (valid, rule) in VALUE_RULES.get(schema, {}).items():
        value = OmegaConf.select(cfg, key)
        if not valid(value):
            raise ConfigError(f"{key}={_plain(value)!r} is invalid: it must be {rule} (set {key}=... on the command "
                              "line or in the YAML file)")
    return cfg


PRECISIONS = ("fp32", "bf16", "fp16")


def _at_least(minimum: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


# Values the type check lets through but the run would refuse late (after extraction started, or deep inside a
# probe with an exception): refused when the config is loaded. Key -> (test, what the value must be).
VALUE_RULES: dict[type, dict[str, tuple[Any, str]]] = {
    EvalConfig: {
        "precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
        "batch_size": (_at_least(1), "an integer >= 1"),
        "num_workers": (_at_least(0), "an integer >= 0"),
        "devices": (_at_least(1), "an integer >= 1 (processes per node, one per device)"),
        "num_nodes": (_at_least(1), "an integer >= 1"),
        "max_input_size": (lambda v: v is None or _at_least(1)(v), "null or an integer >= 1"),
        "linear.n_c": (_at_least(1), "an integer >= 1"),
        "linear.max_iter": (_at_least(1), "an integer >= 1"),
        "knn.ks": (lambda v: len(v) > 0 and all(_at_least(1)(k) for k in v), "a non-empty list of integers >= 1"),
        "knn.temperature": (lambda v: v > 0, "a number > 0"),
    },
}


def _read_yaml_file(path: str | Path) -> DictConfig:
    if not Path(path).is_file():
        from unirep.resources import find_config, packaged_config_names

        try:  # `--config eval-offline` or `configs/eval-offline.yaml` outside a checkout: the packaged copy
            path = find_config(path)
        except ConfigError:
            raise ConfigError(f"config file {str(path)!r} does not exist and is not one of unirep's packaged configs "
                              f"{packaged_config_names()}; see configs/ for examples") from None
    try:
        layer = OmegaConf.load(path)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML ({yaml_problem(exc)}): fix the file; see configs/ "
                          "for examples") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc}): give a YAML text file") from None
    if not isinstance(layer, DictConfig):
        raise ConfigError(f"config file {path} must hold a YAML mapping of settings (key: value), not a "
                          f"{type(layer).__name__.removesuffix('Config').lower()}; see configs/ for examples")
    return layer


def _merge(cfg: DictConfig, layer: DictConfig, where: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, layer)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid configuration {where}: {_describe(exc)} (the settings and their types: the "
                          "dataclasses in unirep/config.py, examples in configs/)") from None


def _describe(exc: Exception) -> str:
    """OmegaConf's first line, led by the full dotted key it is about (its own message names only the last part)."""
    key = getattr(exc, "full_key", None)
    return f"{key}: {_first_line(exc)}" if key else _first_line(exc)


def backbone_specs(cfg: DictConfig) -> list[BackboneSpec]:
    """Normalise the `backbones` list (names or mappings) into BackboneSpecs.

    Refused with one line: unknown keys, two backbones filed under one name (their records would overwrite each
    other), and a label that hides random weights (`random:<arch>` results must say so wherever they appear).
    """
    specs = []
    valid = list(BackboneSpec.__dataclass_fields__)
    for entry in cfg.backbones:
        raw = {"name": entry} if isinstance(entry, str) else entry
        if isinstance(raw, DictConfig | dict):
            unknown = [str(key) for key in raw if key not in valid]
            if unknown:
                raise ConfigError(f"backbone entry {_plain(entry)}: unknown key(s) {', '.join(unknown)}; valid keys "
                                  f"are {', '.join(valid)}")
            try:
                spec = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(BackboneSpec), raw))
            except OmegaConfBaseException as exc:
                raise ConfigError(f"backbone entry {_plain(entry)}: {_first_line(exc)}") from None
            specs.append(spec)
        elif isinstance(raw, ListConfig | list):
            raise ConfigError(f"backbone entry {_plain(entry)} must be a name or a mapping, not a list")
        else:
            specs.append(BackboneSpec(name=str(raw)))
    _check_display_names(specs)
    return specs


def _check_display_names(specs: list[BackboneSpec]) -> None:
    seen: dict[str, BackboneSpec] = {}
    for spec in specs:
        if spec.name.startswith(RANDOM_PREFIX) and not spec.display_name.startswith(RANDOM_PREFIX):
            raise ConfigError(f"backbone {spec.name!r} has random weights but would be filed as {spec.label!r}: "
                              f"start its label with {RANDOM_PREFIX!r} (e.g. {RANDOM_PREFIX + spec.label!r})")
        if spec.display_name in seen:
            raise ConfigError(f"two backbones would be filed as {spec.display_name!r} ({seen[spec.display_name].name!r}"
                              f" and {spec.name!r}): give one a label (--label NAME, or label: in its YAML entry)")
        seen[spec.display_name] = spec


def save_config(cfg: DictConfig, path: str | Path) -> Path:
    return atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))


def to_container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _plain(entry: Any) -> Any:
    return OmegaConf.to_container(entry) if isinstance(entry, DictConfig | ListConfig) else entry


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]
