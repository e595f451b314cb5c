"""A Lightning callback that measures dead/dormant units and the first-layer filter noise score after every
training epoch and logs them through the run's logger (CSV, TensorBoard, ...), for source training and
fine-tuning alike.

What it logs (definitions and thresholds: unirep.unit_stats), per epoch, on a fixed set of inputs:
    units/dead_share/<stage>        share of rectifier channels whose map is zero on >= dead_quantile of inputs
    units/dead_share/all            the same over every rectifier channel of the network
    units/dormant_<tau>/<stage>     Sokar et al.'s dormant ratio at each tau
    units/first_layer_noise         median noise score of the first conv with a spatial kernel
The measurement runs in eval mode under no_grad on the inputs given (e.g. the first 256 source val images), uses
no global random state and updates no batch-norm statistics, so training is unchanged by it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from unirep.unit_stats import (
    DEFAULT_DEAD_QUANTILE,
    DEFAULT_DORMANT_TAUS,
    first_layer_noise_score,
    measure_unit_stats,
    summarize,
)


class UnitStatsCallback(Callback):
    """Log unit statistics of `target(pl_module)` on `images` at the end of every `every_n_epochs`-th epoch.

    Args:
        images: the inputs measured every time (kept on CPU; moved per batch to the module's device and dtype).
        transform: applied to each batch before the forward (e.g. a DataConfig's `normalize_batch` for uint8).
        target: which module to hook (default: the LightningModule itself).
        batch_size: images per forward.
        prefix: metric-name prefix.

    `history` keeps every logged row (epoch + metrics), also when the Trainer has no logger.

    Example:
        >>> callback = UnitStatsCallback(val.images[:256], transform=data_config.normalize_batch,
        ...                              target=lambda module: module.network)
        >>> pl.Trainer(callbacks=[callback], logger=CSVLogger("logs")).fit(module, datamodule)
    """

    def __init__(self, images: torch.Tensor, *, transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 target: Callable[[pl.LightningModule], nn.Module] | None = None,
                 dead_quantile: float = DEFAULT_DEAD_QUANTILE, dormant_taus: Sequence[float] = DEFAULT_DORMANT_TAUS,
                 batch_size: int = 256, every_n_epochs: int = 1, prefix: str = "units"):
        if len(images) == 0:
            raise ValueError("UnitStatsCallback needs at least one input image")
        self.images = images
        self.transform = transform
        self.target = target
        self.dead_quantile = dead_quantile
        self.dormant_taus = tuple(dormant_taus)
        self.batch_size = batch_size
        self.every_n_epochs = every_n_epochs
        self.prefix = prefix
        self.history: list[dict] = []

    def measure(self, model: nn.Module) -> dict[str, float]:
        """The metrics of `model` now (name -> value); what `on_train_epoch_end` logs."""
        parameter = next(model.parameters())

        def batches():
            for begin in range(0, len(self.images), self.batch_size):
                batch = self.images[begin:begin + self.batch_size].to(parameter.device)
                batch = self.transform(batch) if self.transform is not None else batch
                yield batch.to(parameter.dtype)

        summary = summarize(measure_unit_stats(model, batches(), histogram_samples=0), self.dead_quantile,
                            self.dormant_taus)
        metrics: dict[str, float] = {}
        for stage, row in summary["stages"].items():
            if row["dead_share"] is not None:
                metrics[f"{self.prefix}/dead_share/{stage}"] = row["dead_share"]
            for tau, ratio in row["dormant_ratio"].items():
                metrics[f"{self.prefix}/dormant_{tau}/{stage}"] = ratio
        if summary["overall_dead_share"] is not None:
            metrics[f"{self.prefix}/dead_share/all"] = summary["overall_dead_share"]
        noise = first_layer_noise_score(model)
        if noise is not None:
            metrics[f"{self.prefix}/first_layer_noise"] = noise
        return metrics

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        model = self.target(pl_module) if self.target is not None else pl_module
        metrics = self.measure(model)
        self.history.append({"epoch": trainer.current_epoch, **metrics})
        # Through the module's logging, so every logger of the run (CSV, TensorBoard) gets them with the epoch.
        # Every rank measured the same weights on the same images; the sync only keeps Lightning's DDP check quiet.
        pl_module.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=trainer.world_size > 1)
