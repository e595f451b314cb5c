"""The LightningModule that trains one SourceNetwork: weighted cross-entropy over its heads, AdamW or SGD with
warm-up and cosine decay, and (for FSFT) two parameter groups, the trunk at `lr_factor` x the learning rate.

Augmentation (flip, +-shift translation) is drawn per (seed, epoch, example index), not from a global RNG
stream: a resumed run and a run on any number of devices see exactly the same augmented examples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from unirep.backbones.base import DataConfig
from unirep.sources.networks import SourceNetwork


@dataclass(frozen=True)
class OptimSettings:
    lr: float
    momentum: float
    weight_decay: float
    warmup_epochs: float
    label_smoothing: float = 0.0
    trunk_lr_factor: float = 1.0  # FSFT: 0.1, the earlier layers learn 10x slower
    optimizer: str = "adamw"


def _sgd(groups: list[dict], s: OptimSettings) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay, nesterov=s.momentum > 0)


def _adamw(groups: list[dict], s: OptimSettings) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=s.lr, weight_decay=s.weight_decay)


OPTIMIZERS = {"sgd": _sgd, "adamw": _adamw}


@dataclass(frozen=True)
class AugmentSettings:
    enabled: bool
    shift: int
    seed: int


def augmentation_params(seed: int, epoch: int, n: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(flips (n,) bool, shifts (n, 2) int) for every example of one epoch, from (seed, epoch) alone."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    flips = torch.rand(n, generator=generator) < 0.5
    shifts = torch.randint(-shift, shift + 1, (n, 2), generator=generator)
    return flips, shifts


def augment(images: torch.Tensor, flips: torch.Tensor, shifts: torch.Tensor, pad: int) -> torch.Tensor:
    """Translate each uint8 image by its (dy, dx) with zero fill, then mirror it where flips is set."""
    if pad == 0:
        moved = images
    else:
        h, w = images.shape[-2:]
        padded = F.pad(images, (pad, pad, pad, pad))
        moved = torch.stack([padded[i, :, pad + dy:pad + dy + h, pad + dx:pad + dx + w]
                             for i, (dy, dx) in enumerate(shifts.tolist())])
    return torch.where(flips.view(-1, 1, 1, 1).to(moved.device), moved.flip(-1), moved)


class SourceModule(pl.LightningModule):
    """Trains `network` on its heads. Batches are (uint8 images, targets (B, heads), example indices)."""

    def __init__(self, network: SourceNetwork, data_config: DataConfig, optim: OptimSettings,
                 augmentation: AugmentSettings, loss_weights: Sequence[float], num_train: int):
        super().__init__()
        self.network = network
        self.data_config = data_config
        self.optim = optim
        self.augmentation = augmentation
        self.loss_weights = tuple(float(w) for w in loss_weights)
        self.head_names = tuple(network.spec.heads)
        self.num_train = num_train
        self._epoch_params: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.network(x)

    def _inputs(self, images: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        if index is not None and self.augmentation.enabled:
            flips, shifts = self._params_for_epoch()
            images = augment(images, flips[index.cpu()], shifts[index.cpu()], self.augmentation.shift)
        # In the network's dtype: float32 normally, float64 under precision=64-true (Lightning converts the
        # module, not tensors made here).
        return self.data_config.normalize_batch(images).to(self.dtype)

    def _params_for_epoch(self) -> tuple[torch.Tensor, torch.Tensor]:
        epoch = self.current_epoch
        if self._epoch_params is None or self._epoch_params[0] != epoch:
            flips, shifts = augmentation_params(self.augmentation.seed, epoch, self.num_train, self.augmentation.shift)
            self._epoch_params = (epoch, flips, shifts)
        return self._epoch_params[1], self._epoch_params[2]

    def _losses(self, logits: dict[str, torch.Tensor], targets: torch.Tensor) -> list[torch.Tensor]:
        return [F.cross_entropy(logits[name], targets[:, k], label_smoothing=self.optim.label_smoothing)
                for k, name in enumerate(self.head_names)]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets, index = batch
        logits = self(self._inputs(images, index))
        losses = self._losses(logits, targets)
        loss = sum(w * loss for w, loss in zip(self.loss_weights, losses, strict=True))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        for k, name in enumerate(self.head_names):
            acc = (logits[name].argmax(1) == targets[:, k]).float().mean() * 100
            self.log(f"train/acc_{name}", acc, prog_bar=len(self.head_names) == 1, batch_size=len(images))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets, _ = batch
        logits = self(self._inputs(images, None))
        for k, (name, loss) in enumerate(zip(self.head_names, self._losses(logits, targets), strict=True)):
            acc = (logits[name].argmax(1) == targets[:, k]).float().mean() * 100
            self.log(f"val/acc_{name}", acc, prog_bar=True, batch_size=len(images), sync_dist=True)
            self.log(f"val/loss_{name}", loss, batch_size=len(images), sync_dist=True)

    def parameter_groups(self) -> list[dict]:
        """All parameters at the learning rate, or (FSFT) the trunk at lr x trunk_lr_factor and the last two
        layers (feature layer + heads) at the full lr."""
        if self.optim.trunk_lr_factor == 1.0:
            return [{"params": list(self.network.parameters()), "lr": self.optim.lr, "name": "all"}]
        top = [p for module in self.network.last_two_layers() for p in module.parameters()]
        top_ids = {id(p) for p in top}
        trunk = [p for p in self.network.parameters() if id(p) not in top_ids]
        return [{"params": trunk, "lr": self.optim.lr * self.optim.trunk_lr_factor, "name": "earlier-layers"},
                {"params": top, "lr": self.optim.lr, "name": "last-two-layers"}]

    def configure_optimizers(self):
        optimizer = OPTIMIZERS[self.optim.optimizer](self.parameter_groups(), self.optim)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = max(1, self.trainer.max_epochs or 1)
        warmup = int(round(self.optim.warmup_epochs * total / epochs))
        # One multiplier for every group, so FSFT's 10x ratio holds at every step.
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


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
