"""Fine-tuning modes: each turns the `finetune` config section into phases that run one after another.

A phase trains a set of stages (all, the last k, or none = head only) from the model the previous phase selected;
each phase picks its own learning rate and epoch count on val (unirep.finetune.select).

- full: one phase, every stage trains.
- last-k: one phase, the last `last_k` stages (unirep.finetune.stages) and the head train; the rest stays frozen,
  batch-norm statistics included.
- lp-ft: linear probing then fine-tuning (Kumar et al., ICLR 2022): the head is fitted on the frozen network first,
  then every stage trains at the lower learning rates `lrs` x `lpft_lr_factor`, so the already-fitted head
  distorts the pretrained features less than a random one would. `lp_head` says how the head is fitted:
  "probe" (default) is unirep's linear probe, C chosen on val (unirep.finetune.probe_head); "sgd" is a head-only
  SGD phase (`lp_lrs`, `lp_max_epochs`), selected on val like any phase.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig

from unirep.errors import ConfigError
from unirep.registry import Registry


@dataclass(frozen=True)
class Phase:
    """One training phase: `last_k` stages train (None: all, 0: head only); `lrs` are the val-selected candidates.
    `solver`: "sgd" (Lightning fits, one per learning rate) or "probe" (the head from unirep's linear probe)."""

    name: str
    last_k: int | None
    lrs: tuple[float, ...]
    max_epochs: int
    patience: int
    solver: str = "sgd"
    freeze_bn_stats: bool = False


MODES: Registry[Callable[[DictConfig], list[Phase]]] = Registry("fine-tuning mode")
LP_HEADS = ("probe", "sgd")
register_mode = MODES.register


@register_mode("full")
def full_phases(ft: DictConfig) -> list[Phase]:
    return [Phase("finetune", None, _lrs(ft.lrs, "lrs"), ft.max_epochs, ft.patience,
                  freeze_bn_stats=_freeze_bn_stats(ft, default=False))]


@register_mode("last-k")
def last_k_phases(ft: DictConfig) -> list[Phase]:
    if ft.last_k < 1:
        raise ConfigError(f"finetune.last_k={ft.last_k} must be >= 1 (last-k trains the last k stages and the head)")
    return [Phase(f"last-{ft.last_k}", ft.last_k, _lrs(ft.lrs, "lrs"), ft.max_epochs, ft.patience,
                  freeze_bn_stats=_freeze_bn_stats(ft, default=False))]


@register_mode("lp-ft")
def lp_ft_phases(ft: DictConfig) -> list[Phase]:
    if not 0 < ft.lpft_lr_factor <= 1:
        raise ConfigError(f"finetune.lpft_lr_factor={ft.lpft_lr_factor} must be in (0, 1]: LP-FT fine-tunes at a "
                          "lower learning rate than full fine-tuning")
    if ft.lp_head not in LP_HEADS:
        raise ConfigError(f"finetune.lp_head={ft.lp_head!r} must be one of {list(LP_HEADS)}")
    if ft.lp_head == "probe":
        head = Phase("linear-probe", 0, (), 0, 0, solver="probe")
    else:
        head = Phase("head", 0, _lrs(ft.lp_lrs, "lp_lrs"), ft.lp_max_epochs, ft.patience)
    # Rounded to 6 significant digits so records say 0.0003, not 0.00030000000000000003.
    lrs = tuple(float(f"{lr * ft.lpft_lr_factor:.6g}") for lr in _lrs(ft.lrs, "lrs"))
    # The head was fitted on features made with the pretrained batch-norm statistics; replacing them with the target
    # data's batch statistics in the first steps turns those features into others (digits, MobileNetV2: val 92 %
    # after the probe, 10 % after one fine-tuning epoch at lr 0.003), so by default LP-FT keeps them.
    return [head, Phase("finetune", None, lrs, ft.max_epochs, ft.patience,
                        freeze_bn_stats=_freeze_bn_stats(ft, default=True))]


def create_phases(ft: DictConfig) -> list[Phase]:
    """The phases of mode `ft.mode`, checked.

    Example:
        >>> [p.name for p in create_phases(load_config(EvalConfig, dotlist=["finetune.mode=lp-ft"], ...).finetune)]
        ['head', 'finetune']
    """
    phases = MODES.get(ft.mode)(ft)
    for phase in phases:
        if phase.solver == "sgd" and (phase.max_epochs < 1 or phase.patience < 1):
            raise ConfigError(f"fine-tuning phase {phase.name!r}: max_epochs and patience must be >= 1, got "
                              f"{phase.max_epochs} and {phase.patience}")
    return phases


def _freeze_bn_stats(ft: DictConfig, default: bool) -> bool:
    choices = {"auto": default, "frozen": True, "train": False}
    if ft.bn_stats not in choices:
        raise ConfigError(f"finetune.bn_stats={ft.bn_stats!r} must be one of {list(choices)}")
    return choices[ft.bn_stats]


def _lrs(values, key: str) -> tuple[float, ...]:
    lrs = tuple(float(v) for v in values)
    if not lrs or any(lr <= 0 for lr in lrs):
        raise ConfigError(f"finetune.{key}={list(lrs)} must be a non-empty list of positive learning rates")
    return lrs
