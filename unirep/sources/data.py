"""The source task's examples as in-memory tensors, and the LightningDataModule that serves them.

Images go through the backbone's own geometry transform (resize + centre crop) once and are kept as uint8
(Fashion-MNIST at 32 px: 5,000 images = 15 MB); normalisation and augmentation happen per batch in the module.
Targets hold one column per label set, so every network of a run shares one cache.

Sampling is a DistributedSampler in every case (one replica when not distributed) and each rank gets
`batch_size / world_size` examples: the global batch, the example order and hence the result do not depend on
the number of devices (up to BatchNorm statistics, which are per device unless sync_batchnorm is on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from tqdm.auto import tqdm

from unirep.backbones.base import DataConfig
from unirep.errors import ConfigError
from unirep.features import image_batches
from unirep.sources.label_sets import LabelSet
from unirep.tasks.base import ImageSet, stratified_take


@dataclass
class CachedSplit:
    """uint8 images (N, 3, H, W), class labels (N,) and example ids of one split."""

    images: torch.Tensor
    labels: np.ndarray
    ids: list[str]

    def targets(self, label_sets: Sequence[LabelSet]) -> torch.Tensor:
        """(N, len(label_sets)) group indices, one column per label set."""
        return torch.from_numpy(np.stack([ls.relabel(self.labels) for ls in label_sets], axis=1))


def subset(images: ImageSet, size: int | None, seed: int, split: str) -> ImageSet:
    """A stratified seeded subset of `size` examples (all when None)."""
    if size is None or size == len(images):
        return images
    if not 0 < size <= len(images):
        raise ConfigError(f"data.{split}_size={size} must be between 1 and {len(images)} (the task's {split} split)")
    return images.subset(stratified_take(images.labels, np.arange(len(images)), size, np.random.default_rng(seed)))


def cache_split(images: ImageSet, data_config: DataConfig, description: str) -> CachedSplit:
    """Resize + centre-crop every image once, in batches (the pixels feature extraction sees)."""
    batches = list(tqdm(image_batches(images, data_config, batch_size=256), desc=description, leave=False,
                        mininterval=2.0))
    # torch.cat writes one contiguous tensor, also from the grey batches that are 3-channel views of one channel.
    stacked = torch.cat(batches) if batches else torch.zeros((0, 3, data_config.input_size, data_config.input_size),
                                                             dtype=torch.uint8)
    return CachedSplit(stacked, np.asarray(images.labels, dtype=np.int64), list(images.ids))


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
        return TensorDataset(split.images, split.targets(self.label_sets), torch.arange(len(split.images)))

    def per_device_batch_size(self) -> int:
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size % world:
            raise ConfigError(f"data.batch_size={self.batch_size} (the global batch) must be divisible by the "
                              f"{world} devices")
        return self.batch_size // world

    def _loader(self, split: CachedSplit, shuffle: bool) -> DataLoader:
        world = self.trainer.world_size if self.trainer is not None else 1
        rank = self.trainer.global_rank if self.trainer is not None else 0
        dataset = self._dataset(split)
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=self.seed)
        return DataLoader(dataset, batch_size=self.per_device_batch_size(), sampler=sampler,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_split, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_split, shuffle=False)
