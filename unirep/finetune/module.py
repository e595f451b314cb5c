"""The LightningModule that fine-tunes a backbone with a linear head.

Frozen means frozen: parameters outside the trained stages get `requires_grad=False`, never reach the optimizer
(so weight decay cannot touch them), and every module whose parameters are all frozen stays in eval mode during
training, so batch-norm running statistics and dropout behave as in a frozen feature extractor.

The val score is the task's metric (unirep.metrics) over the whole val split: per-example predictions are gathered
across devices and de-duplicated by example index (a DistributedSampler pads the last shard), so the number that
selects a learning rate is exactly the metric, not a mean of per-batch accuracies.
"""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unirep.backbones.base import Backbone
from unirep.metrics import Metric
from unirep.training.optim import OptimSettings, create_optimizer, warmup_cosine_schedule


class Classifier(nn.Module):
    """backbone -> pooled features (B, D) -> linear head -> logits (B, classes)."""

    def __init__(self, backbone: Backbone, num_classes: int, seed: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_classes)
        # Seeded from its own generator: every candidate learning rate starts from the same head.
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=generator) * 0.01)
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def state_copy(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.state_dict().items()}


def trainable_names(net: Classifier, backbone_parameters: dict[str, nn.Parameter]) -> set[str]:
    """Names (in `net`) of the parameters that train: the given backbone parameters and the head."""
    ids = {id(p) for p in backbone_parameters.values()} | {id(p) for p in net.head.parameters()}
    return {name for name, p in net.named_parameters() if id(p) in ids}


class FineTuneModule(pl.LightningModule):
    """Trains `net`'s parameters named in `trainable` with cross-entropy; batches are (uint8, label, index).

    `schedule_epochs` sets the length of the warm-up + cosine schedule in epochs; a refit that stops after the
    selected epoch count keeps the schedule of the run that selected it. `freeze_bn_stats` keeps every batch-norm
    layer in eval mode (running statistics fixed) while its affine parameters train.
    """

    def __init__(self, net: Classifier, trainable: set[str], metric: Metric, optim: OptimSettings,
                 schedule_epochs: int, freeze_bn_stats: bool = False):
        super().__init__()
        self.net = net
        self.metric = metric
        self.optim = optim
        self.schedule_epochs = schedule_epochs
        for name, parameter in net.named_parameters():
            parameter.requires_grad_(name in trainable)
        self.frozen_modules = _fully_frozen(net)
        if freeze_bn_stats:  # batch norm normalises with its running statistics; its affine parameters still train
            self.frozen_modules += [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        # Lightning keeps each module's train/eval mode as it finds it (backbones come in eval mode): set it here.
        self.train()
        self.curve: list[dict] = []
        self._epoch_lr = optim.lr
        self._epoch_val: float | None = None
        self.best_score = -np.inf
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self._val_batches: list[tuple[torch.Tensor, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def train(self, mode: bool = True) -> FineTuneModule:
        super().train(mode)
        if mode:
            for module in self.frozen_modules:
                module.eval()
        return self

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        return self(self.net.backbone.data_config.normalize_batch(images))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels, _ = batch
        loss = F.cross_entropy(self._logits(images), labels, label_smoothing=self.optim.label_smoothing)
        self.log("train/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(images))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_batches = []

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels, index = batch
        self._val_batches.append((index, self._logits(images).argmax(1), labels))

    def on_validation_epoch_end(self) -> None:
        index, predictions, labels = (torch.cat(parts) for parts in zip(*self._val_batches, strict=True))
        if self.trainer.world_size > 1:
            index, predictions, labels = (t.flatten() for t in self.all_gather((index, predictions, labels)))
        index, predictions, labels = (t.cpu().numpy() for t in (index, predictions, labels))
        _, first = np.unique(index, return_index=True)  # the padded duplicates of the last shard go
        score = float(self.metric(labels[first], predictions[first]))
        self.log("val/score", score)
        self._epoch_val = score  # the exact value: the logged one is a float32 tensor
        if score > self.best_score:
            self.best_score, self.best_epoch = score, self.current_epoch + 1
            self.best_state = self.net.state_copy()

    def on_train_epoch_start(self) -> None:
        self._epoch_lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])
        self._epoch_val = None

    def on_train_epoch_end(self) -> None:
        metrics = self.trainer.callback_metrics
        entry = {"epoch": self.current_epoch + 1, "lr": self._epoch_lr,  # the learning rate the epoch started with
                 "train_loss": float(metrics["train/loss"]) if "train/loss" in metrics else None}
        if self._epoch_val is not None:
            entry["val_score"] = self._epoch_val
        self.curve.append(entry)

    def parameter_groups(self) -> list[dict]:
        """The trainable parameters, one learning rate; the optimiser table splits off the 1-d ones, which do not
        decay (unirep.training.optim)."""
        return [{"params": [p for p in self.net.parameters() if p.requires_grad], "name": "trainable"}]

    def configure_optimizers(self):
        optimizer = create_optimizer(self.parameter_groups(), self.optim)
        schedule = warmup_cosine_schedule(optimizer, self.trainer, self.optim.warmup_epochs, self.schedule_epochs)
        return {"optimizer": optimizer, "lr_scheduler": schedule}


def _fully_frozen(net: nn.Module) -> list[nn.Module]:
    """The outermost modules whose parameters are all frozen (modules without parameters are left alone)."""
    found: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        parameters = list(module.parameters())
        if parameters and not any(p.requires_grad for p in parameters):
            found.append(module)
            return
        for child in module.children():
            visit(child)

    visit(net)
    return found


@torch.no_grad()
def predict_scores(net: Classifier, images: torch.Tensor, batch_size: int, device: torch.device) -> np.ndarray:
    """Logits (N, classes) of uint8 images (N, 3, H, W), in eval mode and fp32."""
    model = copy.deepcopy(net).to(device).eval()
    normalize = model.backbone.data_config.normalize_batch
    outputs = [model(normalize(images[i:i + batch_size].to(device))).float().cpu()
               for i in range(0, len(images), batch_size)]
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, net.head.out_features), np.float32)
