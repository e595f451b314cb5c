"""The source task's examples as in-memory tensors, and the LightningDataModule that serves them.

The splits are cached once (unirep.training.data: resized and cropped uint8 images); normalisation and augmentation
happen per batch in the module. Targets hold one column per label set, so every network of a run shares one cache.

Sampling is a DistributedSampler in every case (one replica when not distributed) and each rank gets
`batch_size / world_size` examples (unirep.training.data.device_batch_size): the global batch, the example order
and hence the result do not depend on the number of devices (up to BatchNorm statistics, which are per device
unless sync_batchnorm is on).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from unirep.errors import ConfigError
from unirep.sources.label_sets import LabelSet
from unirep.tasks.base import ImageSet, stratified_take
from unirep.training.data import CachedSplit, device_batch_size, trainer_world


def label_targets(split: CachedSplit, label_sets: Sequence[LabelSet]) -> torch.Tensor:
    """(N, len(label_sets)) group indices of `split`'s examples, one column per label set."""
    return torch.from_numpy(np.stack([ls.relabel(split.labels) for ls in label_sets], axis=1))


def subset(images: ImageSet, size: int | None, seed: int, split: str) -> ImageSet:
    """A stratified seeded subset of `size` examples (all when None)."""
    if size is None or size == len(images):
        return images
    if not 0 < size <= len(images):
        raise ConfigError(f"data.{split}_size={size} must be between 1 and {len(images)} (the task's {split} split)")
    return images.subset(stratified_take(images.labels, np.arange(len(images)), size, np.random.default_rng(seed)))


class SourceDataModule(pl.LightningDataModule):
    """Batches (uint8 images, targets (B, heads), example indices) of the cached train/val splits."""

    def __init__(self, train: CachedSplit, val: CachedSplit, label_sets: Sequence[LabelSet], batch_size: int,
                 seed: int, num_workers: int = 0):
        super().__init__()
        self.train_split, self.val_split = train, val
        self.label_sets = tuple(label_sets)
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers

    def _dataset(self, split: CachedSplit) -> TensorDataset:
        # The index lets augmentation be a function of (seed, epoch, example), independent of device count.
        return TensorDataset(split.images, label_targets(split, self.label_sets), torch.arange(len(split.images)))

    def per_device_batch_size(self) -> int:
        return device_batch_size(self.batch_size, trainer_world(self.trainer)[0], "data.batch_size")

    def _loader(self, split: CachedSplit, shuffle: bool) -> DataLoader:
        world, rank = trainer_world(self.trainer)
        dataset = self._dataset(split)
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=self.seed)
        return DataLoader(dataset, batch_size=self.per_device_batch_size(), sampler=sampler,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_split, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_split, shuffle=False)
