"""The Detector interface on torchvision's RetinaNet: safetensors round trip, Detections and class vectors, the
dense differentiable outputs, one Lightning step with resume, a wrong class count refused in one line, and the
stored detector as a unirep backbone. Tiny: random or 1-step weights on a few composed scenes."""

from __future__ import annotations

import json

import pytest
import torch

from unirep.detection.detectors import Detections, load_detector
from unirep.detection.detectors.base import select_detections
from unirep.detection.detectors.retinanet import RetinaNetDetector
from unirep.errors import WeightsError

CLASSES = ("trouser", "bag", "sneaker", "digit_four", "elephant")


@pytest.fixture(scope="module")
def scenes():
    from unirep.tasks import create_task

    task = create_task("composed-scenes")
    return {split: task.split(split).subset(range(8)) for split in ("train", "val")}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    torch.manual_seed(0)
    detector = RetinaNetDetector.build(CLASSES, {"pretrained_backbone": None}).eval()
    folder = detector.save(tmp_path_factory.mktemp("retinanet"), {"image_size": 128})
    return detector, folder


def images_of(split, n=4):
    return torch.stack([split.image(i) for i in range(n)])


def test_safetensors_round_trip_is_exact(stored, scenes):
    detector, folder = stored
    loaded = load_detector(folder, num_classes=len(CLASSES))
    assert type(loaded) is RetinaNetDetector and loaded.classes == CLASSES
    original, restored = detector.module.state_dict(), loaded.module.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    images = images_of(scenes["val"])
    for a, b in zip(detector.raw(images), loaded.raw(images)):
        assert torch.equal(a, b)


def test_detections_fields_shapes_and_class_vectors(stored, scenes):
    detector, _ = stored
    images = images_of(scenes["val"])
    results = detector.detect(images, conf=0.0, iou=0.5, max_det=7)
    assert len(results) == 4
    for result in results:
        assert isinstance(result, Detections) and len(result) == 7
        assert result.boxes.shape == (7, 4) and result.boxes.dtype == torch.float32
        assert result.scores.shape == (7,) and result.labels.dtype == torch.int64
        assert result.class_scores.shape == (7, len(CLASSES))
        assert torch.equal(result.class_scores.argmax(1), result.labels)
        assert torch.equal(result.class_scores.max(1).values, result.scores)
        assert (result.scores[:-1] >= result.scores[1:]).all()
        assert (result.boxes[:, 2:] >= result.boxes[:, :2]).all() and result.boxes.max() <= 128


def test_raw_is_dense_and_differentiable(stored, scenes):
    detector, _ = stored
    x = detector.preprocess(images_of(scenes["val"], 2)).requires_grad_(True)
    boxes, scores = detector.raw(x)
    # 9 anchors per position on P3..P7 of a 128-px image: 9 * (16^2 + 8^2 + 4^2 + 2^2 + 1)
    assert boxes.shape == (2, 3069, 4) and scores.shape == (2, 3069, len(CLASSES))
    scores[0, :, 1].max().backward()
    assert x.grad is not None and x.grad[0].abs().sum() > 0 and x.grad[1].abs().sum() == 0
    layers = detector.cam_target_layers()  # the FPN's P3-P5 output convolutions: tensor-valued, inside the network
    assert len(layers) == 3 and all(any(m is s for s in detector.module.modules()) for m in layers)


def test_select_detections_keeps_one_box_per_anchor_and_suppresses_overlaps():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=torch.float32)
    scores = torch.tensor([[0.9, 0.8], [0.7, 0.1], [0.2, 0.6], [0.1, 0.05]])
    kept = select_detections(boxes, scores, conf=0.15, iou=0.5, max_det=10)
    # anchor 1 overlaps anchor 0 (same class 0) and is suppressed; anchor 3 is below conf; anchor 0 keeps one label
    assert kept.labels.tolist() == [0, 1] and kept.scores.tolist() == pytest.approx([0.9, 0.6])
    assert torch.equal(kept.class_scores, scores[[0, 2]])


def test_wrong_class_count_is_refused_in_one_line(stored):
    _, folder = stored
    with pytest.raises(WeightsError) as error:
        load_detector(folder, num_classes=3)
    message = str(error.value)
    assert "\n" not in message and "5 classes" in message and "has 3" in message


def test_tampered_weights_are_refused(stored, tmp_path):
    detector, _ = stored
    folder = detector.save(tmp_path / "copy")
    (folder / "weights.safetensors").write_bytes(b"not the file")
    with pytest.raises(WeightsError, match="does not match"):
        load_detector(folder)


def test_one_lightning_step_trains_and_a_killed_run_resumes(scenes, tmp_path):
    from unirep.detection.detectors.retinanet_training import fit_retinanet

    torch.manual_seed(0)
    detector = RetinaNetDetector.build(CLASSES, {"pretrained_backbone": None})
    before = {k: v.clone() for k, v in detector.module.state_dict().items()}
    settings = dict(epochs=1, batch_size=4, lr=1e-3, seed=0, progress_bar=False, limit_batches=1)
    fit = fit_retinanet(detector, scenes["train"], scenes["val"], tmp_path, **settings)
    assert fit["selected_on"] == "val/map_50" and 0.0 <= fit["best_val_map_50"] <= 1.0
    after = detector.module.state_dict()
    frozen = "backbone.body.conv_stem.weight"
    assert torch.equal(before[frozen], after[frozen])  # the stem stays ImageNet's / as built
    assert not torch.equal(before["head.classification_head.cls_logits.weight"],
                           after["head.classification_head.cls_logits.weight"])
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    # Same settings again: Lightning resumes from last.ckpt (already at max_epochs) and trains nothing more.
    again = RetinaNetDetector.build(CLASSES, {"pretrained_backbone": None})
    fit_retinanet(again, scenes["train"], scenes["val"], tmp_path, **settings)
    assert all(torch.equal(after[k], again.module.state_dict()[k]) for k in after)


def test_stored_detector_is_a_unirep_backbone(stored, scenes):
    from unirep.backbones import create_backbone

    detector, folder = stored
    backbone = create_backbone(f"detector:{folder}")
    assert backbone.num_features == 320 and backbone.weights_id.startswith("sha256:")
    fpn = create_backbone(f"detector:{folder / 'weights.safetensors'}", layer="fpn")
    assert fpn.num_features == 5 * 32
    x = backbone.data_config.normalize_batch(images_of(scenes["val"], 2))
    with torch.no_grad():
        expected = detector.module.backbone(x)
        pooled = torch.cat([m.mean(dim=(2, 3)) for m in expected.values()], dim=1)
        assert torch.allclose(fpn(x), pooled, atol=1e-6)
    identity = backbone.identity()
    assert identity["detector_kind"] == "retinanet" and json.dumps(identity)
