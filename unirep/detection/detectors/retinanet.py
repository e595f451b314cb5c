"""torchvision's RetinaNet (anchor-based, sigmoid focal loss) around a timm backbone with an FPN.

The network is torchvision's `RetinaNet` itself (its head, anchor generator, box coder, matcher and loss); only
the backbone is ours: a timm model's stage outputs (`forward_intermediates`, the rest pruned) into torchvision's
`FeaturePyramidNetwork` with `LastLevelP6P7`, P3-P7 as in the paper. Sized for small scenes on CPU: FPN and head
width `fpn_channels` (32), GroupNorm in the head (torchvision's RetinaNet v2 recipe; trains from a random head
without the paper's careful init tricks), anchors of twice each level's stride (16-256 px), three scales and three
aspect ratios per position.

torchvision's `GeneralizedRCNNTransform` (resize to min_size, normalise, pad to 32) is bypassed: `preprocess`
normalises and pads, so boxes are in the input image's pixels and `raw` can take gradients w.r.t. the normalised
input. Detection keeps one box per anchor (its best class; see `select_detections`), where torchvision's own
postprocess keeps (anchor, class) pairs: each detection then has one class vector whose argmax is its label.

The backbone starts from unirep's packaged ImageNet weights when `pretrained_backbone` names them (MobileNetV2 by
default); a stored checkpoint rebuilds the same architecture randomly initialised and loads its safetensors.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from unirep.detection.detectors.base import (
    Detections,
    Detector,
    check_images,
    pad_to_stride,
    register_detector,
    select_detections,
)

DEFAULT_CONFIG: dict[str, Any] = {
    "arch": "mobilenetv2_100",
    "pretrained_backbone": "mobilenetv2_100.packaged_in1k",  # the init of training; None: random
    "stage_indices": [2, 3, 4],  # timm feature_info indices: strides 8, 16, 32 (C3-C5)
    # Stem + blocks 0-4 (strides 2-16) keep their ImageNet weights; blocks 5-6 (stride 32), FPN and head train.
    "frozen_blocks": 5,
    "fpn_channels": 32,
    "anchor_sizes": [16, 32, 64, 128, 256],  # P3..P7: twice the stride
    "anchor_scales": [1.0, 2 ** (1 / 3), 2 ** (2 / 3)],
    "aspect_ratios": [0.5, 1.0, 2.0],
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}
STRIDE = 32  # inputs padded to a multiple of C5's stride, as torchvision's transform does (size_divisible=32)


class TimmFPN(nn.Module):
    """A timm network's stage outputs through torchvision's FPN (+ P6/P7): the `backbone` torchvision's RetinaNet
    expects (a module returning an OrderedDict of maps, with `out_channels`)."""

    def __init__(self, arch: str, stage_indices: Sequence[int], fpn_channels: int, body: nn.Module | None = None,
                 frozen_blocks: int = 0):
        import timm
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelP6P7

        super().__init__()
        self.stage_indices = list(stage_indices)
        self.body = body if body is not None else timm.create_model(arch, pretrained=False)
        # Drops the classifier and the convolutions after the last stage used (they would carry dead weights).
        self.body.prune_intermediate_layers(self.stage_indices, prune_head=True)
        channels = [self.body.feature_info[i]["num_chs"] for i in self.stage_indices]
        self.fpn = FeaturePyramidNetwork(channels, fpn_channels, extra_blocks=LastLevelP6P7(fpn_channels,
                                                                                            fpn_channels))
        self.out_channels = fpn_channels
        # The stem and the first `frozen_blocks` blocks keep their ImageNet weights and batch-norm statistics
        # (torchvision's trainable_backbone_layers): on CPU the high-resolution early layers cost most to train.
        self.frozen = [self.body.conv_stem, self.body.bn1, *self.body.blocks[:frozen_blocks]] if frozen_blocks else []
        for module in self.frozen:
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> TimmFPN:
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.body.forward_intermediates(x, indices=self.stage_indices, intermediates_only=True,
                                               stop_early=True)
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))


def build_retinanet(num_classes: int, config: Mapping[str, Any], body: nn.Module | None = None) -> nn.Module:
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.retinanet import RetinaNetHead

    backbone = TimmFPN(config["arch"], config["stage_indices"], config["fpn_channels"], body=body,
                       frozen_blocks=config["frozen_blocks"])
    sizes = tuple(tuple(float(s * k) for k in config["anchor_scales"]) for s in config["anchor_sizes"])
    anchors = AnchorGenerator(sizes, (tuple(config["aspect_ratios"]),) * len(sizes))
    groups = max(1, config["fpn_channels"] // 8)  # 8 channels per group, as torchvision's v2 head (32 x 8 = 256)
    head = RetinaNetHead(backbone.out_channels, anchors.num_anchors_per_location()[0], num_classes,
                         norm_layer=partial(nn.GroupNorm, groups))
    # min/max_size only matter for torchvision's own transform, which this adapter never calls.
    return RetinaNet(backbone, num_classes, anchor_generator=anchors, head=head, min_size=128, max_size=1333,
                     image_mean=config["mean"], image_std=config["std"])


@register_detector("retinanet")
class RetinaNetDetector(Detector):
    """torchvision RetinaNet (timm backbone + FPN), as a unirep `Detector`.

    Example:
        >>> detector = RetinaNetDetector.build(("a", "b"), {"pretrained_backbone": None})
        >>> boxes, scores = detector.raw(torch.zeros(1, 3, 128, 128, dtype=torch.uint8))
        >>> boxes.shape, scores.shape  # 9 anchors per position on P3..P7 of a 128-px image
        (torch.Size([1, 3069, 4]), torch.Size([1, 3069, 2]))
    """

    kind = "retinanet"
    default_conf = 0.25
    default_iou = 0.5

    @classmethod
    def build(cls, classes: tuple[str, ...], config: Mapping[str, Any], *, pretrained: bool = False
              ) -> RetinaNetDetector:
        """Random weights from `config` (missing keys: DEFAULT_CONFIG); `pretrained=True` starts the backbone
        from the packaged ImageNet weights `config["pretrained_backbone"]` names (training's init)."""
        config = {**DEFAULT_CONFIG, **dict(config)}
        body = None
        if pretrained and config["pretrained_backbone"]:
            from unirep.backbones import create_backbone

            # The packaged file is sha256-checked and loaded strictly into the full timm network.
            body = create_backbone(config["pretrained_backbone"]).model.train()
        return cls(build_retinanet(len(classes), config, body=body), classes, config)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, "RetinaNet input")
        if images.is_floating_point():  # already preprocessed (gradient methods pass their own input)
            return images
        mean = torch.tensor(self.config["mean"], device=images.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.config["std"], device=images.device).view(1, 3, 1, 1) * 255.0
        return pad_to_stride((images.float() - mean) / std, STRIDE)

    def _dense(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor], torch.Tensor]:
        from torchvision.models.detection.image_list import ImageList

        x = self.preprocess(images)
        features = list(self.module.backbone(x).values())
        head_outputs = self.module.head(features)
        anchors = self.module.anchor_generator(ImageList(x, [tuple(x.shape[-2:])] * x.shape[0]), features)
        return head_outputs, anchors, x

    def losses(self, images: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """torchvision's RetinaNet losses (sigmoid focal classification, L1 box regression) of one batch."""
        head_outputs, anchors, _ = self._dense(images)
        return self.module.compute_loss([dict(t) for t in targets], head_outputs, anchors)

    def raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.ops import clip_boxes_to_image

        height, width = images.shape[-2:]
        head_outputs, anchors, _ = self._dense(images)
        boxes = torch.stack([
            clip_boxes_to_image(self.module.box_coder.decode_single(regression, anchor), (height, width))
            for regression, anchor in zip(head_outputs["bbox_regression"], anchors)
        ])
        return boxes, torch.sigmoid(head_outputs["cls_logits"])

    @torch.no_grad()
    def detect(self, images: torch.Tensor, conf: float | None = None, iou: float | None = None,
               max_det: int = 100) -> list[Detections]:
        boxes, scores = self.raw(images)
        conf = self.default_conf if conf is None else conf
        iou = self.default_iou if iou is None else iou
        candidates = self.module.topk_candidates
        return [select_detections(b, s, conf, iou, max_det, candidates) for b, s in zip(boxes, scores)]

    def cam_target_layers(self) -> list[nn.Module]:
        """The FPN's output convolutions of P3, P4, P5 (tensor-valued; grad-cam averages their maps)."""
        return list(self.module.backbone.fpn.layer_blocks)

    def backbone_maps(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """The FPN maps P3..P7 (the detector backbone as a unirep backbone pools these)."""
        return self.module.backbone(self.preprocess(images))


__all__ = ["DEFAULT_CONFIG", "RetinaNetDetector", "TimmFPN", "build_retinanet"]
