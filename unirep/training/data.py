"""Splits held in memory for training, and how the global batch is shared among devices.

Images go through the backbone's own geometry transform (resize + centre crop, the pixels feature extraction sees)
once and are kept as uint8 (Fashion-MNIST at 32 px: 5,000 images = 15 MB); normalisation and augmentation happen
per batch on the device.

Both trainers sample with a DistributedSampler in every case (one replica when not distributed) and give each rank
`batch_size / world_size` examples, so the global batch, the example order and hence the result do not depend on
the number of devices (up to batch-norm statistics, which are per device unless synchronised).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from unirep.backbones.base import DataConfig
from unirep.errors import ConfigError
from unirep.features import image_batches
from unirep.tasks.base import ImageSet


@dataclass
class CachedSplit:
    """uint8 images (N, 3, H, W), class labels (N,) and example ids of one split."""

    images: torch.Tensor
    labels: np.ndarray
    ids: list[str]


def cache_split(images: ImageSet, data_config: DataConfig, description: str) -> CachedSplit:
    """Resize + centre-crop every image once, in batches (the pixels feature extraction sees).

    Example:
        >>> split = cache_split(create_task("sklearn-digits").split("val"), DataConfig(input_size=32), "val")
        >>> split.images.shape, split.images.dtype
        (torch.Size([300, 3, 32, 32]), torch.uint8)
    """
    batches = list(tqdm(image_batches(images, data_config, batch_size=256), desc=description, leave=False,
                        mininterval=2.0))
    # torch.cat writes one contiguous tensor, also from the grey batches that are 3-channel views of one channel.
    stacked = torch.cat(batches) if batches else torch.zeros((0, 3, data_config.input_size, data_config.input_size),
                                                             dtype=torch.uint8)
    return CachedSplit(stacked, np.asarray(images.labels, dtype=np.int64), list(images.ids))


def device_batch_size(global_batch: int, world_size: int, setting: str) -> int:
    """The examples each of `world_size` devices takes per step, so that together they make `global_batch`.

    `setting` names the config key in the error (e.g. "data.batch_size")."""
    if global_batch % world_size:
        raise ConfigError(f"{setting}={global_batch} (the global batch) must be divisible by the {world_size} "
                          "devices")
    return global_batch // world_size


def trainer_world(trainer) -> tuple[int, int]:
    """(world size, global rank) of a Lightning Trainer; (1, 0) before one is attached."""
    return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
