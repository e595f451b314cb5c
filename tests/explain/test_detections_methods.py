"""Detection explanations against what is known independently.

- A region detector built from real torch/torchvision parts (a 1x1 Conv2d, torchvision's RoIAlign, the detector
  base's NMS): its class vector reads only region A, its box position only region B. D-RISE and occlusion must put
  the category map's maximum in A and the location map's in B (occlusion's category map 0 over B).
- D-RISE saliency (the paper's sum and the mean-baseline default) equals a direct recomputation from the same seeded
  masks, one masked image at a time, on a random-init torchvision RetinaNet, whatever the batch size; p = 1 gives
  the exact constant map.
- Grad-CAM's category and location maps equal Grad-CAM written out with autograd; the location target's reason to
  exist (the producing anchor's own IoU has zero gradient) is checked; EigenCAM equals the sign-corrected first
  principal component; all four methods run through RetinaNet and YOLOv8 (ultralytics, random init).
~25 s on 2 shared cores.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import RoIAlign, box_iou

from unirep.detection.detectors.base import Detector, select_detections
from unirep.explain.detections.cam import DenseOutputs, eigencam_saliency, gradcam_saliency, producing_anchor
from unirep.explain.detections.drise import DriseSettings, drise_masks, drise_saliency
from unirep.explain.detections.methods import DETECTION_METHODS, ExplainSettings, explain_image
from unirep.explain.detections.occlusion import OcclusionSettings, occlusion_saliency
from unirep.explain.detections.targets import targets_of
from unirep.explanation_metrics import box_mask, pointing_game

SIZE = 64
REGION_A = (8.0, 8.0, 24.0, 24.0)  # the class is read here
REGION_B = (40.0, 40.0, 56.0, 56.0)  # the box position is read here
BASE_BOX = torch.tensor([12.0, 20.0, 52.0, 44.0])  # 40 px wide: moved <= 12 px, IoU >= 0.54
OFFSETS = torch.tensor([0.0, 3.0, -3.0])  # three anchors: the kept one and two NMS suppresses


class RegionDetector(Detector):
    """Two classes. features = mean colour (1x1 conv) -> RoIAlign over A (a) and over B (b); anchor k's box is
    BASE_BOX moved right by 16 (b - 0.5) + OFFSETS[k], its class vector sigmoid(+-(6a - 3)) (x 0.5 off anchor 0)."""

    kind = "test-region"

    def __init__(self):
        features = nn.Conv2d(3, 2, kernel_size=1, bias=False)
        with torch.no_grad():
            features.weight.fill_(1.0 / 3.0)
        super().__init__(nn.ModuleDict({"features": features}), ("left", "right"), {})
        self.pool = RoIAlign(output_size=1, spatial_scale=1.0, sampling_ratio=4, aligned=True)

    def preprocess(self, images):
        return images if images.is_floating_point() else images.float() / 255.0

    def raw(self, images):
        maps = self.module["features"](self.preprocess(images))
        n = len(maps)
        rois = lambda box: torch.cat([torch.arange(n, dtype=maps.dtype)[:, None],  # noqa: E731
                                      torch.tensor(box, dtype=maps.dtype).expand(n, 4)], dim=1)
        a = self.pool(maps[:, :1], rois(REGION_A)).reshape(n)
        b = self.pool(maps[:, 1:], rois(REGION_B)).reshape(n)
        shift = 16.0 * (b - 0.5)[:, None] + OFFSETS[None]  # (n, 3)
        boxes = BASE_BOX.expand(n, 3, 4) + torch.stack([shift, torch.zeros_like(shift)] * 2, dim=-1)
        logit = 6.0 * a - 3.0
        vector = torch.sigmoid(torch.stack([logit, -logit], dim=1))  # (n, 2)
        scale = torch.tensor([1.0, 0.5, 0.5])[None, :, None]
        return boxes, vector[:, None, :] * scale

    @torch.no_grad()
    def detect(self, images, conf=None, iou=None, max_det=100):
        boxes, scores = self.raw(images)
        return [select_detections(b, s, 0.01 if conf is None else conf, 0.5 if iou is None else iou, max_det)
                for b, s in zip(boxes, scores)]

    def cam_target_layers(self):
        return [self.module["features"]]


@pytest.fixture(scope="module")
def region():
    detector = RegionDetector().eval()
    image = (torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 80 + 150).to(torch.uint8)
    (found,) = detector.detect(image[None])
    assert len(found) == 1 and int(found.labels[0]) == 0  # anchor 0 kept, its neighbours suppressed
    return detector, image, targets_of(found, 0)


@pytest.fixture(scope="module")
def retinanet():
    from unirep.detection.detectors.retinanet import RetinaNetDetector

    torch.manual_seed(0)
    detector = RetinaNetDetector.build(("a", "b", "c"), {"arch": "mobilenetv2_050", "pretrained_backbone": None})
    image = torch.randint(0, 256, (3, SIZE, SIZE), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    (found,) = detector.eval().detect(image[None], conf=0.0, max_det=2)
    return detector, image, targets_of(found, 0)


def mean_in(saliency, box):
    return float(saliency[box_mask(box, SIZE, SIZE)].mean())


def test_drise_and_occlusion_find_the_region_each_map_is_about(region):
    detector, image, targets = region
    drise = drise_saliency(detector, image, targets, DriseSettings(masks=400, resolution=8, batch_size=100))
    occlusion = occlusion_saliency(detector, image, targets, OcclusionSettings(window=8, stride=4,
                                                                               variants=("category", "location")))
    for maps in (drise, occlusion):
        category, location = maps["category"][0], maps["location"][0]
        assert pointing_game(category, REGION_A) and pointing_game(location, REGION_B)
        assert mean_in(category, REGION_A) > mean_in(category, REGION_B)
        assert mean_in(location, REGION_B) > mean_in(location, REGION_A)
    assert pointing_game(drise["full"][0], REGION_A) or pointing_game(drise["full"][0], REGION_B)
    # occluding B moves the box (IoU stays >= 0.5) but leaves the class vector: the category score is unchanged
    assert occlusion["category"][0][box_mask(REGION_B, SIZE, SIZE)].abs().max() < 1e-6  # float32 rounding only
    assert occlusion["category"][0][box_mask(REGION_A, SIZE, SIZE)].min() > 0.05


def direct_drise(detector, image, target, settings):
    """D-RISE written out: each mask alone, its image alone through the detector, the paper's similarity; returns
    the paper's map and the mean-baseline map."""
    masks = drise_masks(settings, SIZE, SIZE)
    weights = []
    for mask in masks:
        masked = (image.float() * mask).round().clamp(0, 255).to(torch.uint8)
        (found,) = detector.detect(masked[None], conf=settings.conf, iou=settings.iou, max_det=settings.max_det)
        weight = 0.0
        if len(found):
            iou = box_iou(target.box[None].double(), found.boxes.double())[0]
            cos = torch.nn.functional.cosine_similarity(target.class_scores[None].double(),
                                                        found.class_scores.double(), dim=1)
            weight = float((iou * cos).max())
        weights.append(weight)
    weights = torch.tensor(weights, dtype=torch.float64)
    flat = masks[:, 0].double()
    scale = settings.masks * settings.p
    paper = (weights[:, None, None] * flat).sum(0) / scale
    centred = ((weights - weights.mean())[:, None, None] * flat).sum(0) / scale
    return paper, centred


def test_drise_equals_a_direct_recomputation_from_the_same_masks(retinanet):
    detector, image, targets = retinanet
    settings = DriseSettings(masks=12, resolution=4, p=0.5, seed=3, batch_size=5, conf=0.0, max_det=20,
                             baseline="none")
    paper, centred = direct_drise(detector, image, targets[0], settings)
    maps = drise_saliency(detector, image, targets[:1], settings)
    np.testing.assert_allclose(maps["full"][0].numpy(), paper.numpy(), atol=1e-6)
    mean_baseline = DriseSettings(**{**settings.to_dict(), "baseline": "mean", "batch_size": 12})  # rebatched too
    np.testing.assert_allclose(drise_saliency(detector, image, targets[:1], mean_baseline)["full"][0].numpy(),
                               centred.numpy(), atol=1e-6)
    masks = drise_masks(settings, SIZE, SIZE)
    assert masks.min() >= 0 and masks.max() <= 1 and not torch.equal(masks, drise_masks(
        DriseSettings(**{**settings.to_dict(), "seed": 4}), SIZE, SIZE))
    # every cell kept: each masked image is the image, IoU = cos = 1, so the paper's map is 1 everywhere, and
    # the mean-baseline map 0
    for baseline, value in (("none", 1.0), ("mean", 0.0)):
        everything = drise_saliency(detector, image, targets[:1], DriseSettings(masks=3, p=1.0, conf=0.0,
                                                                                 baseline=baseline))
        np.testing.assert_allclose(everything["full"][0].numpy(), value, atol=1e-5)  # float32 detector outputs


def direct_gradcam(detector, image, objective):
    """Grad-CAM by hand on the single target layer: ReLU(sum_c mean(dY/dA_c) A_c), min-max scaled."""
    activations = {}
    handle = detector.cam_target_layers()[0].register_forward_hook(lambda m, i, o: activations.update(a=o))
    dense = DenseOutputs(detector)(detector.preprocess(image[None]))
    handle.remove()
    gradient, = torch.autograd.grad(objective(dense[0]), activations["a"])
    cam = torch.relu((gradient.mean(dim=(2, 3), keepdim=True) * activations["a"]).sum(dim=1))[0].detach()
    cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)
    return ((cam - cam.min()) / (cam.max() - cam.min() + 1e-7)).double()


def test_gradcam_targets_equal_gradcam_written_out(region):
    detector, image, targets = region
    target = targets[0]
    maps = gradcam_saliency(detector, image, targets)
    with torch.no_grad():
        boxes, scores = detector.raw(image[None])
    anchor = producing_anchor(boxes[0], scores[0], target)
    assert anchor == 0
    category = direct_gradcam(detector, image, lambda out: out[anchor, 4 + target.label])
    np.testing.assert_allclose(maps["category"][0].numpy(), category.numpy(), atol=1e-4)
    neighbours = torch.nonzero(box_iou(target.box[None], boxes[0])[0] >= 0.5).squeeze(1)
    assert neighbours.tolist() == [0, 1, 2]
    location = direct_gradcam(detector, image, lambda out: box_iou(target.box[None], out[neighbours, :4])[0].sum())
    np.testing.assert_allclose(maps["location"][0].numpy(), location.numpy(), atol=1e-4)
    # why not the producing anchor's own IoU: at its maximum (the box itself) its gradient is zero
    own = DenseOutputs(detector)(detector.preprocess(image[None]))[0]
    layer_input = detector.module["features"].weight
    gradient, = torch.autograd.grad(box_iou(target.box[None], own[anchor:anchor + 1, :4])[0, 0], layer_input)
    assert float(gradient.abs().max()) < 1e-6


def test_eigencam_is_the_sign_corrected_first_component(region):
    detector, image, targets = region
    (eigen,) = eigencam_saliency(detector, image, targets)["full"]
    with torch.no_grad():
        acts = detector.module["features"](detector.preprocess(image[None]))[0].double()
    flat = acts.reshape(acts.shape[0], -1).T
    flat = flat - flat.mean(dim=0)
    projection = (flat @ torch.linalg.svd(flat, full_matrices=False).Vh[0]).reshape(SIZE, SIZE)
    if projection.min().abs() > projection.max().abs():
        projection = -projection
    projection = projection.clamp(min=0)
    projection = (projection - projection.min()) / (projection.max() - projection.min() + 1e-7)
    np.testing.assert_allclose(eigen.numpy(), projection.numpy(), atol=1e-4)


@pytest.mark.parametrize("kind", ["retinanet", "yolov8"])
def test_every_method_runs_through_both_real_detectors(kind, retinanet):
    if kind == "retinanet":
        detector, image, targets = retinanet
    else:
        from unirep.detection.detectors.yolo import YOLODetector

        torch.manual_seed(0)
        detector = YOLODetector.build(("a", "b", "c"), {}).eval()
        image = retinanet[1]
        (found,) = detector.detect(image[None], conf=0.0, max_det=2)
        targets = targets_of(found, 0)
        with torch.no_grad():
            boxes, scores = detector.raw(image[None])
        row = producing_anchor(boxes[0], scores[0], targets[0])  # the anchor point the detection came from
        torch.testing.assert_close(scores[0, row], targets[0].class_scores, atol=1e-5, rtol=0)
        torch.testing.assert_close(boxes[0, row], targets[0].box, atol=1e-3, rtol=0)
    assert len(targets) == 2
    settings = ExplainSettings(drise=DriseSettings(masks=8, batch_size=8, conf=0.0),
                               occlusion=OcclusionSettings(window=32, stride=32, conf=0.0))
    results = explain_image(detector, image, targets, DETECTION_METHODS.list(), settings)
    expected = {"drise": {"full", "category", "location"}, "occlusion": {"category", "location"},
                "gradcam": {"category", "location"}, "eigencam": {"full"}}
    assert {m: set(r.maps) for m, r in results.items()} == expected
    for result in results.values():
        assert result.wall_s > 0
        for values in result.maps.values():
            assert values.shape == (2, SIZE, SIZE) and torch.isfinite(values).all()
    gradcam = results["gradcam"].maps
    assert gradcam["category"].max() > 0 and not torch.allclose(gradcam["category"], gradcam["location"])
