"""The one optimiser table of unirep, its weight-decay rule, and the warm-up + cosine learning-rate schedule.

Weight-decay rule (WEIGHT_DECAY_RULE, recorded with every optimiser's settings): weight decay applies to the
weights of convolutions and linear layers only; 1-d parameters (biases, and the scale and shift of batch/group/layer
norms) never decay. Why: decay pulls a parameter towards 0, which for a weight matrix is a prior towards smaller
features, but for a norm's scale means shrinking every activation of that channel and for a bias a pull towards an
arbitrary offset; neither regularises, and with normalisation layers the weights' scale is free anyway. It is the
practice of timm (`param_groups_weight_decay`), BERT and most ImageNet recipes. Before this table, source training
decayed every parameter and fine-tuning only the weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from unirep.registry import Registry

WEIGHT_DECAY_RULE = "no decay on 1-d parameters (biases, norm scales and shifts)"


@dataclass(frozen=True)
class OptimSettings:
    """What an optimiser and its schedule need; recorded as is (asdict) with the run it trained."""

    lr: float
    momentum: float
    weight_decay: float
    warmup_epochs: float
    label_smoothing: float = 0.0
    trunk_lr_factor: float = 1.0  # FSFT: 0.1, the earlier layers learn 10x slower
    optimizer: str = "adamw"
    weight_decay_rule: str = WEIGHT_DECAY_RULE


OPTIMIZERS: Registry[Callable[[list[dict], OptimSettings], torch.optim.Optimizer]] = Registry("optimizer")
register_optimizer = OPTIMIZERS.register


@register_optimizer("sgd")
def _sgd(groups: list[dict], settings: OptimSettings) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, nesterov=settings.momentum > 0)


@register_optimizer("adamw")
def _adamw(groups: list[dict], settings: OptimSettings) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=settings.lr)  # every group carries its own weight_decay


def weight_decay_groups(groups: list[dict], weight_decay: float) -> list[dict]:
    """Each parameter group (a dict with "params" and its own options, e.g. "lr", "name") split in two by the
    weight-decay rule: its weights at `weight_decay`, its 1-d parameters at 0. Empty halves are left out."""
    split = []
    for group in groups:
        params = list(group["params"])
        name = group.get("name", "params")
        decayed = [p for p in params if p.ndim > 1]
        not_decayed = [p for p in params if p.ndim <= 1]
        if decayed:
            split.append({**group, "params": decayed, "weight_decay": weight_decay, "name": name})
        if not_decayed:
            split.append({**group, "params": not_decayed, "weight_decay": 0.0, "name": f"{name}/no-decay"})
    return split


def create_optimizer(groups: list[dict], settings: OptimSettings) -> torch.optim.Optimizer:
    """`settings.optimizer` from the table over `groups`, with the weight-decay rule applied.

    Example:
        >>> optimizer = create_optimizer([{"params": model.parameters()}], OptimSettings(0.1, 0.9, 5e-4, 0.0))
        >>> [(g["name"], g["weight_decay"]) for g in optimizer.param_groups]
        [('params', 0.0005), ('params/no-decay', 0.0)]
    """
    if settings.weight_decay_rule != WEIGHT_DECAY_RULE:
        raise ValueError(f"unknown weight-decay rule {settings.weight_decay_rule!r}; unirep applies "
                         f"{WEIGHT_DECAY_RULE!r}")
    return OPTIMIZERS.get(settings.optimizer)(weight_decay_groups(groups, settings.weight_decay), settings)


def warmup_cosine(warmup: int, total: int):
    """lr multiplier: linear warm-up over `warmup` steps, then cosine decay to 0 at `total` steps.

    A closure on purpose: LambdaLR checkpoints callable *objects* but not functions, so a run resumed with more
    epochs follows the schedule of its new length instead of the one restored from the checkpoint.
    """

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return multiplier


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, trainer, warmup_epochs: float,
                           schedule_epochs: int | None = None) -> dict:
    """Lightning's lr_scheduler entry (stepped every optimiser step) for `trainer`'s fit: warm-up over
    `warmup_epochs`, then cosine decay to 0 over `schedule_epochs` (default: the fit's max_epochs). A fit shorter
    than its schedule (fine-tuning's refit, stopped at the selected epoch) follows the longer schedule's start.
    One multiplier for every group, so ratios between groups (FSFT's 10x) hold at every step."""
    epochs = max(1, trainer.max_epochs or 1)
    per_epoch = max(1, int(trainer.estimated_stepping_batches) // epochs)
    total = per_epoch * max(schedule_epochs or epochs, epochs)
    warmup = int(round(warmup_epochs * per_epoch))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, total))
    return {"scheduler": schedule, "interval": "step"}
