"""CAM methods through the `grad-cam` package, with the target defined per detection on the dense pre-NMS outputs.

grad-cam calls a model and hands each image's output to a target callable. NMS is a selection, not a function one
can differentiate through, so the model given to grad-cam is `DenseOutputs`: `Detector.raw` (boxes (A, 4) and
class scores (A, C) of every anchor of RetinaNet, every anchor point of YOLOv8's anchor-free head) concatenated to
(A, 4 + C), and the target picks the anchor that produced the detection (`producing_anchor`: the row whose box and
class vector equal the kept detection's; `detect` keeps exactly those rows). The layers are
`Detector.cam_target_layers()`: tensor-valued convolutions (the FPN's or the neck's outputs; grad-cam cannot hook an
FPN that returns a dict), each map ReLU'd, min-max scaled, upsampled to the input and averaged by grad-cam.

Targets (Grad-CAM, `gradcam`):
- category: the target class's probability at the producing anchor, P_a*[c_t];
- location: the box agreement of the dense outputs, sum over the anchors a with IoU(B_a, L_t) >= match_iou of
  IoU(B_a, L_t). Not the producing anchor's own IoU: IoU(b, L_t) is 1 at b = L_t, its maximum, where its gradient
  is 0 (the Grad-CAM map would be empty); the neighbouring anchors that NMS suppressed regress boxes that overlap
  L_t without equalling it, and what moves them towards L_t is what locates the object.
EigenCAM (`eigencam`) is target-free: the first principal component of the layer's activations, one map per image
shared by all its detections, so it has no category/location split. grad-cam's `EigenCAM` takes the SVD's sign as
it comes (a map can come out inverted, the background bright, and the ReLU then keeps the background); this one
uses grad-cam's own sign-corrected projection (`get_2d_projection_with_sign_correction`: flip when |min| > |max|).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchvision.ops import box_iou

from unirep.detection.detectors.base import Detector
from unirep.explain.detections.targets import MATCH_IOU, DetectionTarget


class DenseOutputs(nn.Module):
    """The detector's pre-NMS outputs as one tensor per image, (B, A, 4 + C): what grad-cam differentiates."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.detector = detector

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        # A fresh leaf that needs gradients: the hooked activations then carry gradients even when the detector's
        # parameters are frozen (requires_grad False), which grad-cam's hooks would otherwise skip silently.
        boxes, scores = self.detector.raw(inputs.detach().requires_grad_(True))
        return torch.cat([boxes, scores], dim=-1)


def producing_anchor(boxes: torch.Tensor, class_scores: torch.Tensor, target: DetectionTarget) -> int:
    """The row of the dense outputs (A, 4), (A, C) the target detection was kept from (its box and class vector)."""
    distance = (boxes.detach().cpu() - target.box).abs().sum(1) + (class_scores.detach().cpu()
                                                                   - target.class_scores).abs().sum(1)
    return int(distance.argmin())


class AnchorClassTarget:
    """Category target: P_a[c] at anchor a of one image's (A, 4 + C) dense output."""

    def __init__(self, anchor: int, label: int):
        self.anchor, self.label = anchor, label

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[self.anchor, 4 + self.label]


class BoxAgreementTarget:
    """Location target: sum of IoU(B_a, box) over the anchors overlapping the box by >= match_iou (chosen once,
    at the unperturbed image, so the target is one fixed differentiable sum)."""

    def __init__(self, box: torch.Tensor, anchors: torch.Tensor):
        self.box, self.anchors = box, anchors

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        boxes = output[self.anchors, :4]
        return box_iou(self.box.to(boxes)[None], boxes)[0].sum()


def _sign_corrected_eigencam():
    from pytorch_grad_cam import EigenCAM
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

    class SignCorrectedEigenCAM(EigenCAM):
        def get_cam_image(self, input_tensor, target_layer, target_category, activations, grads, eigen_smooth):
            return get_2d_projection_with_sign_correction(activations)

    return SignCorrectedEigenCAM


def _crop(cams: np.ndarray, height: int, width: int) -> torch.Tensor:
    """grad-cam's maps are at the padded input's size: the image is the top-left corner."""
    return torch.from_numpy(np.asarray(cams, dtype=np.float64))[:, :height, :width]


def gradcam_saliency(detector: Detector, image: torch.Tensor, targets: list[DetectionTarget], *,
                     match_iou: float = MATCH_IOU, variants: tuple[str, ...] = ("category", "location")
                     ) -> dict[str, torch.Tensor]:
    """Grad-CAM maps of `targets` in the uint8 (3, H, W) image: {variant: (T, H, W)}; one forward and one backward
    of a batch holding the image once per target."""
    from pytorch_grad_cam import GradCAM

    height, width = image.shape[-2:]
    if not targets:
        return {v: torch.zeros(0, height, width, dtype=torch.float64) for v in variants}
    inputs = detector.preprocess(image[None])
    with torch.no_grad():
        boxes, scores = detector.raw(inputs)
    boxes, scores = boxes[0], scores[0]
    maps = {}
    with GradCAM(model=DenseOutputs(detector), target_layers=detector.cam_target_layers()) as cam:
        for variant in variants:
            if variant == "category":
                callables = [AnchorClassTarget(producing_anchor(boxes, scores, t), t.label) for t in targets]
            elif variant == "location":
                overlap = box_iou(torch.stack([t.box for t in targets]).to(boxes), boxes)
                callables = [BoxAgreementTarget(t.box, torch.nonzero(overlap[k] >= match_iou).squeeze(1))
                             for k, t in enumerate(targets)]
            else:
                raise ValueError(f"Grad-CAM variant must be category or location, got {variant!r}")
            maps[variant] = _crop(cam(input_tensor=inputs.expand(len(targets), -1, -1, -1).contiguous(),
                                      targets=callables), height, width)
    return maps


def eigencam_saliency(detector: Detector, image: torch.Tensor, targets: list[DetectionTarget]
                      ) -> dict[str, torch.Tensor]:
    """EigenCAM of the image (target-free), repeated for each target: {"full": (T, H, W)}."""
    height, width = image.shape[-2:]
    inputs = detector.preprocess(image[None])
    with _sign_corrected_eigencam()(model=DenseOutputs(detector), target_layers=detector.cam_target_layers()) as cam:
        single = _crop(cam(input_tensor=inputs, targets=None), height, width)
    return {"full": single.expand(len(targets), -1, -1).clone()}
