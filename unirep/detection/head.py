"""The trained part of the detection protocol: torchvision's FPN and RetinaNet head over cached backbone maps.

The network is torchvision's `RetinaNet` (its head, anchor generator, box coder, matcher, focal loss and
postprocessing); its `backbone` is a `FeaturePyramidNetwork` that takes the frozen backbone's cached maps, so
training never runs the backbone. `RetinaNet.forward` (which would resize and normalise images, then run the
backbone) is bypassed: `losses` and `detect` call the same pieces it calls, on the maps. Sizes for 2 CPU cores:
FPN and head width `fpn_channels` (64), GroupNorm in the head (torchvision's RetinaNet v2 recipe: it trains from a
random head without the paper's prior-probability tricks alone), one anchor size per FPN level (`anchor_scale` x
the level's stride, times 2^0, 2^(1/3), 2^(2/3)) and aspect ratios 0.5, 1, 2.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from functools import partial

import lightning.pytorch as pl
import torch
from torch import nn

from unirep.detection.pyramid import PyramidSplit


class MapsFPN(nn.Module):
    """torchvision's FPN over cached maps: the `backbone` torchvision's RetinaNet expects (`out_channels`)."""

    def __init__(self, channels: Sequence[int], fpn_channels: int):
        from torchvision.ops import FeaturePyramidNetwork

        super().__init__()
        self.fpn = FeaturePyramidNetwork(list(channels), fpn_channels)
        self.out_channels = fpn_channels

    def forward(self, maps: Sequence[torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))


def build_head(channels: Sequence[int], strides: Sequence[int], num_classes: int, fpn_channels: int = 64,
               anchor_scale: float = 4.0, detections_per_img: int = 100) -> nn.Module:
    """torchvision RetinaNet whose backbone is an FPN over maps of `channels` at `strides`."""
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.retinanet import RetinaNetHead

    fpn = MapsFPN(channels, fpn_channels)
    sizes = tuple(tuple(float(anchor_scale * s * 2 ** (k / 3)) for k in range(3)) for s in strides)
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    head = RetinaNetHead(fpn_channels, anchors.num_anchors_per_location()[0], num_classes,
                         norm_layer=partial(nn.GroupNorm, min(32, fpn_channels)))
    # min/max_size, image_mean/std only configure torchvision's transform, which is never called here.
    return RetinaNet(fpn, num_classes, anchor_generator=anchors, head=head, min_size=128,
                     detections_per_img=detections_per_img, image_mean=[0.0] * 3, image_std=[1.0] * 3)


def _image_list(batch_size: int, input_size: int, like: torch.Tensor):
    from torchvision.models.detection.image_list import ImageList

    # The anchor generator reads only the batch's padded size and each image's size: an empty tensor is enough.
    tensors = like.new_empty((batch_size, 0, input_size, input_size))
    return ImageList(tensors, [(input_size, input_size)] * batch_size)


def losses(net: nn.Module, maps: Sequence[torch.Tensor], targets: list[dict], input_size: int) -> dict:
    """RetinaNet's classification (sigmoid focal) and box regression (L1) losses of a batch of cached maps."""
    features = list(net.backbone(maps).values())
    head_outputs = net.head(features)
    anchors = net.anchor_generator(_image_list(len(targets), input_size, features[0]), features)
    return net.compute_loss(targets, head_outputs, anchors)


@torch.no_grad()
def detect(net: nn.Module, maps: Sequence[torch.Tensor], input_size: int) -> list[dict[str, torch.Tensor]]:
    """RetinaNet's postprocessing (score > 0.05, top 1000 per level, class-wise NMS at 0.5, best 100) in input
    pixels, as `RetinaNet.forward` computes it in eval mode."""
    features = list(net.backbone(maps).values())
    head_outputs = net.head(features)
    image_list = _image_list(len(maps[0]), input_size, features[0])
    anchors = net.anchor_generator(image_list, features)
    per_level = [f.size(2) * f.size(3) for f in features]
    per_position = head_outputs["cls_logits"].size(1) // sum(per_level)
    split = [n * per_position for n in per_level]
    split_outputs = {k: list(v.split(split, dim=1)) for k, v in head_outputs.items()}
    split_anchors = [list(a.split(split)) for a in anchors]
    return net.postprocess_detections(split_outputs, split_anchors, image_list.image_sizes)


def predict_split(net: nn.Module, split: PyramidSplit, input_size: int, batch_size: int = 32
                  ) -> list[dict[str, torch.Tensor]]:
    """Detections (input pixels) for every image of a cached split."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    out: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(split), batch_size):
        found = detect(net, [m[start: start + batch_size].to(device) for m in split.maps], input_size)
        out.extend({k: v.cpu() for k, v in d.items()} for d in found)
    net.train(was_training)
    return out


class CachedMaps(torch.utils.data.Dataset):
    """(maps of one image, its target) from a PyramidSplit."""

    def __init__(self, split: PyramidSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        return [m[index] for m in self.split.maps], self.split.targets[index]


def collate_maps(batch):
    maps, targets = zip(*batch, strict=True)
    return [torch.stack(level) for level in zip(*maps, strict=True)], list(targets)


class MapsDataModule(pl.LightningDataModule):
    """Cached maps in seeded, shuffled batches; each device takes `batch_size / world size` (under DDP Lightning's
    DistributedSampler shards the examples)."""

    def __init__(self, split: PyramidSplit, batch_size: int, seed: int):
        super().__init__()
        self.split, self.batch_size, self.seed = split, batch_size, seed

    def train_dataloader(self):
        from unirep.training.data import device_batch_size

        world = self.trainer.world_size if self.trainer is not None else 1
        return torch.utils.data.DataLoader(
            CachedMaps(self.split), batch_size=device_batch_size(self.batch_size, world, "detection.batch_size"),
            shuffle=True, generator=torch.Generator().manual_seed(self.seed), collate_fn=collate_maps)


class DetectionHeadModule(pl.LightningModule):
    """Trains `net` (FPN + RetinaNet head) on cached maps: AdamW at `lr`, cosine decay over `max_epochs`, the loss
    the sum of RetinaNet's two. `on_epoch_end(epoch, module)` (the selection's val scoring) runs after each epoch."""

    def __init__(self, net: nn.Module, input_size: int, lr: float, weight_decay: float, max_epochs: int,
                 on_epoch_end=None):
        super().__init__()
        self.net = net
        self.input_size = input_size
        self.lr, self.weight_decay, self.max_epochs = lr, weight_decay, max_epochs
        self.on_epoch_end = on_epoch_end
        self.train_losses: list[float] = []
        self._epoch_losses: list[float] = []

    def training_step(self, batch, batch_idx):
        maps, targets = batch
        parts = losses(self.net, maps, targets, self.input_size)
        loss = parts["classification"] + parts["bbox_regression"]
        self._epoch_losses.append(float(loss.detach()))
        return loss

    def on_train_epoch_end(self) -> None:
        self.train_losses.append(sum(self._epoch_losses) / max(len(self._epoch_losses), 1))
        self._epoch_losses = []
        if self.on_epoch_end is not None:
            self.on_epoch_end(self.current_epoch + 1, self)

    def configure_optimizers(self):
        decay = [p for n, p in self.net.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.net.named_parameters() if p.ndim <= 1]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": self.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=self.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}
