"""The ultralytics YOLOv8 adapter: the only module importing ultralytics, offline (no network attempt while
building, training and validating), safetensors round trip into DetectionModel(yaml, nc), Detections with class
vectors, checkpoints for another class count refused in one line (safetensors and an ultralytics .pt read through
its safe loader), a pickle payload never executed, and unirep's mAP against ultralytics' own val() metric.

Tiny: yolov8n with random weights, 64-px scenes, one epoch on 4 images."""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from unirep.detection.detectors import load_detector
from unirep.errors import WeightsError

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("square", "bar", "blob")


def tiny_scenes(n: int, size: int = 64, seed: int = 0):
    """Scenes drawn here: 1-2 filled rectangles / bars / discs on noise, boxes known by construction."""
    from unirep.detection.data import DetectionSet

    rng = np.random.default_rng(seed)
    images, boxes, labels = [], [], []
    for _ in range(n):
        image = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        own_boxes, own_labels = [], []
        for k in range(int(rng.integers(1, 3))):
            label = int(rng.integers(0, 3))
            w, h = {0: (20, 20), 1: (10, 28), 2: (22, 22)}[label]
            x0 = int(rng.integers(0, size - w)) if k == 0 else (size - w) // 2
            y0 = int(rng.integers(0, size // 2 - h)) if k == 0 else size - h
            yy, xx = np.mgrid[:h, :w]
            disc = (yy - h / 2 + .5) ** 2 + (xx - w / 2 + .5) ** 2 <= (w / 2) ** 2
            mask = np.ones((h, w), bool) if label < 2 else disc
            image[y0:y0 + h, x0:x0 + w][mask] = (200, 60 + 60 * label, 40)
            own_boxes.append([x0, y0, x0 + w, y0 + h])
            own_labels.append(label)
        images.append(image)
        boxes.append(np.array(own_boxes, np.float32))
        labels.append(np.array(own_labels))
    return DetectionSet.from_arrays(np.stack(images), boxes, labels, [f"s{i}" for i in range(n)], CLASSES, "tiny")


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory):
    from unirep.detection.detectors.training import write_yolo_dataset

    splits = {"train": tiny_scenes(4, seed=1), "val": tiny_scenes(3, seed=2), "test": tiny_scenes(3, seed=3)}
    return write_yolo_dataset(splits, tmp_path_factory.mktemp("yolo-folder")), splits


@pytest.fixture(scope="module")
def yolo():
    from unirep.detection.detectors.yolo import YOLODetector

    torch.manual_seed(0)
    return YOLODetector.build(CLASSES, {"model_yaml": "yolov8n.yaml"}).eval()


def test_no_unirep_module_but_the_adapter_imports_ultralytics():
    importers = []
    for path in (ROOT / "unirep").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "ultralytics" or n.startswith("ultralytics.") for n in names):
                importers.append(path.relative_to(ROOT).as_posix())
    assert set(importers) == {"unirep/detection/detectors/yolo.py"}
    # Importing the package, every command, backbone and detector module leaves ultralytics unimported.
    code = ("import sys, importlib; import unirep.cli; from unirep.commands import COMMAND_MODULES; "
            "from unirep.backbones import BACKBONE_MODULES; "
            "[importlib.import_module(m) for m in (*COMMAND_MODULES, *BACKBONE_MODULES)]; "
            "import unirep.detection.detectors.retinanet, unirep.detection.detectors.training; "
            "assert 'ultralytics' not in sys.modules, 'ultralytics imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300)


def test_offline_switches_hold_during_the_call_and_are_restored_after(monkeypatch):
    from unirep.detection.detectors.yolo import ultralytics_environment

    monkeypatch.delenv("YOLO_OFFLINE", raising=False)
    with ultralytics_environment():
        import ultralytics.utils

        assert os.environ["YOLO_OFFLINE"] == "1" and os.environ["YOLO_AUTOINSTALL"] == "false"
        assert os.environ["ULTRALYTICS_SAFE_LOAD"] == "1"
        assert (Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics" / "Arial.ttf").is_file()
        assert ultralytics.utils.is_online() is False
    assert "YOLO_OFFLINE" not in os.environ


def test_training_and_validation_never_touch_the_network(yolo, data_yaml, tmp_path, monkeypatch):
    from unirep.detection.detectors.yolo import YOLODetector, train_yolo, ultralytics_val

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:1])
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    path, _ = data_yaml
    detector = YOLODetector.build(CLASSES, yolo.config)
    detector.module.load_state_dict(yolo.module.state_dict())
    train_yolo(detector, path, tmp_path, epochs=1, imgsz=64, batch=4, seed=0)
    assert (tmp_path / "ultralytics" / "weights" / "last.pt").is_file()
    metrics = ultralytics_val(detector, path, "test", 64)
    assert set(metrics) == {"map", "map_50"}
    assert attempts == []


def test_safetensors_round_trip_is_exact_and_loads_into_detection_model(yolo, tmp_path):
    from safetensors.torch import load_file
    from ultralytics.nn.tasks import DetectionModel

    folder = yolo.save(tmp_path / "yolo", {"image_size": 64})
    loaded = load_detector(folder, num_classes=3)
    original = yolo.module.state_dict()
    assert all(torch.equal(original[k], v) for k, v in loaded.module.state_dict().items())
    plain = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    plain.load_state_dict(load_file(folder / "weights.safetensors"), strict=True)  # exactly, no unirep needed
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(plain.eval()(x)[0], yolo.module(x)[0])


def test_detections_carry_the_class_vector_of_their_cell(yolo):
    images = (torch.rand(2, 3, 64, 64) * 255).to(torch.uint8)
    boxes, scores = yolo.raw(images)
    assert boxes.shape == (2, 64 + 16 + 4, 4) and scores.shape == (2, 84, 3)
    for result in yolo.detect(images, conf=0.0, iou=0.7, max_det=5):
        assert result.boxes.shape == (5, 4) and result.class_scores.shape == (5, 3)
        assert torch.equal(result.class_scores.argmax(1), result.labels)
        assert torch.allclose(result.class_scores.max(1).values, result.scores)
    assert len(yolo.cam_target_layers()) == 3


def test_checkpoints_for_another_class_count_are_refused_in_one_line(yolo, data_yaml, tmp_path, capsys):
    from ultralytics.nn.tasks import DetectionModel

    from unirep.cli import main
    from unirep.detection.detectors.yolo import YOLODetector, detector_from_weights

    path, _ = data_yaml
    wrong = YOLODetector.build(("a", "b", "c", "d", "e"), {})
    (tmp_path / "five").mkdir()
    wrong.save(tmp_path / "five")
    code = main(["train-detector", "yolov8n", "--data", str(path), "--epochs", "0",
                 "--weights", str(tmp_path / "five" / "weights.safetensors"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "5 classes but the task has 3" in err
    # An ultralytics .pt (the dict its trainer saves) goes through ultralytics' safe loader, then the same check.
    model = DetectionModel("yolov8n.yaml", nc=5, verbose=False)
    torch.save({"model": model.half(), "epoch": -1}, tmp_path / "five.pt")
    with pytest.raises(WeightsError, match="5 classes but the task has 3"):
        detector_from_weights(tmp_path / "five.pt", CLASSES, {})
    torch.save({"model": DetectionModel("yolov8n.yaml", nc=3, verbose=False).half()}, tmp_path / "three.pt")
    assert detector_from_weights(tmp_path / "three.pt", CLASSES, {}).num_classes == 3


class Payload:
    """A pickle that would run code when unpickled without the safe loader."""

    def __reduce__(self):
        return (Path.touch, (Path(os.environ["UNIREP_TEST_PAYLOAD"]),))


def test_a_pickled_payload_in_a_pt_is_never_executed(tmp_path, monkeypatch):
    from unirep.detection.detectors.yolo import detector_from_weights

    marker = tmp_path / "payload-ran"
    monkeypatch.setenv("UNIREP_TEST_PAYLOAD", str(marker))
    torch.save({"model": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="safe loader"):
        detector_from_weights(tmp_path / "evil.pt", CLASSES, {})
    assert not marker.exists()


def test_detection_map_agrees_with_ultralytics_val_metric_on_the_same_predictions():
    """The same predictions scored by unirep's detection_map (COCOeval through torchmetrics) and by the code
    ultralytics' val() runs per batch (DetectionValidator._process_batch + DetMetrics.process). They differ by
    design in two places: AP integration (COCO samples the precision envelope at 101 recall points as a step
    function; ultralytics integrates the linearly interpolated envelope with the trapezoid rule over the same 101
    points) and matching (COCO in score order, ultralytics by IoU). On this case (no competing duplicates) only the
    integration differs: bounded by one 1/100 recall step of precision per class, so |delta| <= 0.01."""
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils.metrics import DetMetrics

    from unirep.detection.metrics import detection_map

    rng = np.random.default_rng(0)
    predictions, targets = [], []
    for _ in range(12):
        n = int(rng.integers(1, 5))
        xy = rng.uniform(0, 90, (n, 2))
        gt = np.concatenate([xy, xy + rng.uniform(15, 35, (n, 2))], 1).astype(np.float32)
        labels = rng.integers(0, 3, n)
        keep = rng.random(n) > 0.2  # some objects missed
        shift = rng.normal(0, 3.0, (n, 4)) * keep[:, None]
        extra = np.concatenate([rng.uniform(100, 150, (2, 2)), rng.uniform(160, 200, (2, 2))], 1)  # false positives
        boxes = np.concatenate([(gt + shift)[keep], extra]).astype(np.float32)
        pred_labels = np.concatenate([labels[keep], rng.integers(0, 3, 2)])
        scores = rng.uniform(0.05, 1.0, len(boxes)).astype(np.float32)
        predictions.append({"boxes": torch.tensor(boxes), "scores": torch.tensor(scores),
                            "labels": torch.tensor(pred_labels)})
        targets.append({"boxes": torch.tensor(gt), "labels": torch.tensor(labels)})
    ours = detection_map(predictions, targets, num_classes=3)

    validator = DetectionValidator()
    validator.metrics = DetMetrics(names=dict(enumerate(CLASSES)))
    for i, (p, t) in enumerate(zip(predictions, targets)):
        tp = validator._process_batch({"bboxes": p["boxes"], "cls": p["labels"].float()},
                                      {"bboxes": t["boxes"], "cls": t["labels"].float()})
        validator.metrics.update_stats({**tp, "target_cls": t["labels"].numpy(), "target_img": np.unique(t["labels"]),
                                        "conf": p["scores"].numpy(), "pred_cls": p["labels"].numpy(),
                                        "im_name": f"{i}.png"})
    validator.metrics.process()
    theirs = validator.metrics.box
    assert 0.3 < ours["map_50"] < 0.95  # a case with misses and false positives, not a trivial 0 or 1
    assert abs(ours["map_50"] - theirs.map50) <= 0.01
    assert abs(ours["map"] - theirs.map) <= 0.01
