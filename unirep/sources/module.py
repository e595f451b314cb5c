"""The LightningModule that trains one SourceNetwork: weighted cross-entropy over its heads, AdamW or SGD with
warm-up and cosine decay (unirep.training.optim, the table and weight-decay rule fine-tuning uses too), and (for
FSFT) two parameter groups, the trunk at `lr_factor` x the learning rate.

Augmentation (flip, +-shift translation) is drawn per (seed, epoch, example index), not from a global RNG
stream: a resumed run and a run on any number of devices see exactly the same augmented examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from unirep.backbones.base import DataConfig
from unirep.sources.networks import SourceNetwork
from unirep.training.optim import OptimSettings, create_optimizer, warmup_cosine_schedule

__all__ = ["AugmentSettings", "OptimSettings", "SourceModule", "augment", "augmentation_params"]


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
        # Each lr group splits into its weights (decayed) and its 1-d parameters (not): unirep.training.optim.
        optimizer = create_optimizer(self.parameter_groups(), self.optim)
        return {"optimizer": optimizer,
                "lr_scheduler": warmup_cosine_schedule(optimizer, self.trainer, self.optim.warmup_epochs)}

