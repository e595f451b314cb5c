"""Fine-tuning data: timm's training transform on real digits, train/val loaders, train+val for the refit."""

from __future__ import annotations

import random

import numpy as np
import torch

from unirep.backbones.base import DataConfig
from unirep.finetune.data import AugmentedImages, FineTuneDataModule, cached_dataset, concat_images, train_transform
from unirep.training.data import cache_split


def test_training_transform_is_timms_random_crop_at_the_backbone_size_in_uint8(tiny, digits):
    config = DataConfig(input_size=32, interpolation="bilinear", crop_pct=0.875)
    transform = train_transform(config, tiny.config().finetune)
    image, _ = digits.train[0]
    torch.manual_seed(0), random.seed(0)
    first = transform(image)
    second = transform(image)
    torch.manual_seed(0), random.seed(0)
    assert first.dtype == torch.uint8 and first.shape == (3, 32, 32)
    assert not torch.equal(first, second)  # a fresh random crop per draw...
    assert torch.equal(transform(image), first)  # ...reproducible from the seeds
    # Unnormalised: the digit's dark background stays near 0 and the strokes near 255, as in the eval transform.
    assert first.min() < 30 and first.max() > 200


def test_loaders_drop_a_small_last_train_batch_but_keep_every_val_example(digits):
    config = DataConfig(input_size=16, crop_pct=1.0)
    val = cached_dataset(cache_split(digits.val.subset(np.arange(50)), config, "val"))
    sizes = {}
    for n in (140, 150):
        train = AugmentedImages(digits.train.subset(np.arange(n)), config.geometry_transform())
        sizes[n] = [len(b[0]) for b in FineTuneDataModule(train, val, batch_size=32, seed=0).train_dataloader()]
    assert sizes == {140: [32] * 4, 150: [32] * 4 + [22]}  # 140 = 4 x 32 + 12: the 12 (< 16) sit this epoch out
    data = FineTuneDataModule(train, val, batch_size=32, seed=0)
    images, labels, index = next(iter(data.train_dataloader()))
    assert images.dtype == torch.uint8 and labels.tolist() == [int(digits.train.labels[i]) for i in index]
    val_index = torch.cat([b[2] for b in data.val_dataloader()])
    assert sorted(val_index.tolist()) == list(range(50))


def test_train_plus_val_keeps_both_splits_in_order(digits):
    train, val = digits.train.subset(np.arange(3)), digits.val.subset(np.arange(2))
    both = concat_images(train, val)
    assert both.ids == train.ids + val.ids and both.labels.tolist() == [*train.labels, *val.labels]
    assert np.array_equal(np.asarray(both[4][0]), np.asarray(val[1][0]))
