"""Images for fine-tuning: timm's training transform for the train split, cached eval geometry for the rest.

Training images go through `timm.data.create_transform(is_training=True, normalize=False)` (random resized crop,
flip, optional colour jitter / RandAugment) and stay uint8; normalisation happens per batch on the device with the
backbone's own mean/std, as in feature extraction. Val and test images are resized and centre-cropped once
(`unirep.training.data.cache_split`, the eval transform the probes' features use).

Sharding is source training's (unirep.training.data): a DistributedSampler in every case (one replica when not
distributed) and `batch_size / world_size` examples per device, so the global batch and the example order do not
depend on the number of devices. Unlike source training, the train loader drops its last incomplete batch when that
batch would hold less than half a batch: 897 digits in batches of 64 would otherwise end every epoch with a one-example
step (a noisy update and one-example batch-norm statistics), while LFW's 100 training crops keep their second batch
of 36 instead of losing a third of the data every epoch.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

from unirep.backbones.base import DataConfig
from unirep.errors import DataError
from unirep.tasks.base import ImageSet
from unirep.training.data import CachedSplit, device_batch_size, trainer_world


class AugmentedImages(Dataset):
    """(uint8 image (3, H, W) after `transform`, label, example index) of an ImageSet."""

    def __init__(self, images: ImageSet, transform: Callable):
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image, label = self.images[index]
        return self.transform(image), label, index


def cached_dataset(split: CachedSplit) -> TensorDataset:
    """(uint8 image, label, example index) of an already resized and cropped split."""
    labels = torch.as_tensor(split.labels, dtype=torch.long)
    return TensorDataset(split.images, labels, torch.arange(len(split.images)))


def train_transform(data_config: DataConfig, ft: DictConfig) -> Callable:
    """timm's training transform at the backbone's input size and interpolation, without normalisation."""
    from timm.data import create_transform

    return create_transform(
        input_size=data_config.input_size, is_training=True, scale=tuple(ft.scale), ratio=tuple(ft.ratio),
        hflip=ft.hflip, color_jitter=ft.color_jitter or None, auto_augment=ft.auto_augment,
        interpolation=data_config.interpolation, mean=data_config.mean, std=data_config.std, normalize=False,
    )


def concat_images(first: ImageSet, second: ImageSet) -> ImageSet:
    """The examples of `first` then `second` (train+val for the refit)."""
    cut = len(first)
    both = ImageSet(first.ids + second.ids, np.concatenate([first.labels, second.labels]),
                    lambda i: first[i][0] if i < cut else second[i - cut][0])
    both.whole_image = first.whole_image
    return both


def check_labels(images: ImageSet, num_classes: int, split: str) -> None:
    labels = np.asarray(images.labels)
    if labels.ndim != 1:
        raise DataError(f"fine-tuning trains a softmax head: {split} labels must be one class per image, got shape "
                        f"{labels.shape} (multi-label tasks: use the linear probe)")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{split} labels must lie in 0..{num_classes - 1} (the task card's classes), found "
                        f"{int(labels.min())}..{int(labels.max())}")


class FineTuneDataModule(pl.LightningDataModule):
    """Train batches (augmented or cached) and, when given, val batches; both (uint8, label, index)."""

    def __init__(self, train: Dataset, val: Dataset | None, batch_size: int, seed: int, num_workers: int = 0):
        super().__init__()
        self.train_set, self.val_set = train, val
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers

    def per_device_batch_size(self) -> int:
        return device_batch_size(self.batch_size, trainer_world(self.trainer)[0], "finetune.batch_size")

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        world, rank = trainer_world(self.trainer)
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=train, seed=self.seed)
        batch = self.per_device_batch_size()
        drop_last = train and len(sampler) >= batch and len(sampler) % batch < batch / 2
        return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, drop_last=drop_last)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            return []  # the refit has no val split left: Lightning skips validation
        return self._loader(self.val_set, train=False)
