"""Training a detector on a detection task: `train_detector` (what `unirep train-detector` runs).

RetinaNet trains on Lightning (`RetinaNetModule`: torchvision's losses, AdamW with warm-up + cosine, horizontal
flips; the epoch with the best val mAP@.5 is kept, `last.ckpt` after every epoch so a killed run resumes there).
YOLO trains with ultralytics' own trainer on a YOLO-format folder + data.yaml written from the task's splits (or a
user's data.yaml as it is). Either way the result is a detector folder (`weights.safetensors` + `detector.json`)
whose record holds the task and its manifest digest, the settings, the seed, the library versions, the wall and
CPU seconds and the test mAP computed by `unirep.detection.metrics.detection_map` on `detector.detect` outputs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from unirep.detection.detectors.base import (
    EVAL_CONF,
    EVAL_MAX_DET,
    Detector,
    is_detector_dir,
    load_detector,
    read_detector_metadata,
    stack_images,
)
from unirep.errors import ConfigError
from unirep.fileio import atomic_write_json, atomic_write_text, sha256_json

KINDS = {"retinanet": "retinanet", "yolov8n": "yolov8"}


@dataclass(frozen=True)
class DetectorTrainConfig:
    """What `unirep train-detector` trains; every field goes into the detector's record."""

    detector: str  # retinanet | yolov8n
    task: str | None = None  # a detection task name
    data: str | None = None  # or a user's ultralytics data.yaml (YOLO only)
    out: str | None = None
    epochs: int | None = None
    batch_size: int = 16
    lr: float | None = None
    seed: int = 0
    weights: str | None = None  # YOLO init: a user's ultralytics .pt (safe loader) or safetensors
    image_size: int | None = None
    threads: int | None = None
    model_config: dict = field(default_factory=dict)

    def resolved_out(self) -> Path:
        return Path(self.out or f"runs/detectors/{self.detector}")


@dataclass
class TrainedDetector:
    detector: Detector
    out: Path
    record: dict


def train_detector(cfg: DetectorTrainConfig) -> TrainedDetector:
    """Train (or, when `cfg.out` already holds this run's finished detector, read back) and record a detector."""
    from unirep.runtime import library_versions

    if cfg.detector not in KINDS:
        raise ConfigError(f"detector must be one of {sorted(KINDS)}, got {cfg.detector!r}")
    if (cfg.task is None) == (cfg.data is None):
        raise ConfigError("give exactly one of --task (a detection task) or --data (an ultralytics data.yaml)")
    if cfg.data is not None and cfg.detector != "yolov8n":
        raise ConfigError("--data (an ultralytics data.yaml) trains YOLO only: use --task for retinanet")
    out = cfg.resolved_out()
    key = sha256_json(asdict(cfg) | {"out": None, "threads": None})
    if is_detector_dir(out) and read_detector_metadata(out).get("run_key") == key:
        detector = load_detector(out)
        if "test" in detector.metadata or cfg.task is None:
            return TrainedDetector(detector, out, detector.metadata)
        # Trained, but its test evaluation did not finish: only that is redone.
        record = {**detector.metadata, "test": evaluate_detector(detector, _task_splits(cfg.task)[0]["test"])}
        detector.save(out, {k: v for k, v in record.items() if k not in _FOLDER_KEYS})
        return TrainedDetector(detector, out, record)
    atomic_write_json(out / "train-config.json", asdict(cfg) | {"run_key": key})
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    wall, cpu = time.perf_counter(), time.process_time()
    train = _train_retinanet if cfg.detector == "retinanet" else _train_yolo
    detector, extra, splits = train(cfg, out)
    seconds = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    record = {"run_key": key, "train_config": asdict(cfg), "seconds": seconds, "versions": library_versions(
        (*_versioned(), "ultralytics") if cfg.detector == "yolov8n" else _versioned()), **extra}
    # Saved before the test evaluation, so a failure there never costs the training.
    detector.save(out, record)
    if splits is not None:
        record["test"] = evaluate_detector(detector, splits["test"])
        detector.save(out, record)
    return TrainedDetector(detector, out, record)


# Keys write_detector sets itself.
_FOLDER_KEYS = ("format", "format_version", "kind", "classes", "config", "weights_file", "weights_sha256")


def _versioned() -> tuple[str, ...]:
    from unirep.runtime import VERSIONED_PACKAGES

    return (*VERSIONED_PACKAGES, "torchmetrics", "pycocotools")


def _task_splits(name: str) -> tuple[Any, dict]:
    from unirep.tasks import create_task

    task = create_task(name)
    if getattr(task, "kind", None) != "detection":
        raise ConfigError(f"task {name!r} is not a detection task: see `unirep list tasks --suite detection`")
    splits = {s: task.split(s) for s in ("train", "val", "test")}
    return splits, {"task": name, "manifest_digest": task.manifest.digest, "counts": {s: len(v) for s, v in
                                                                                       splits.items()}}


def evaluate_detector(detector: Detector, split, batch_size: int = 32, conf: float = EVAL_CONF,
                      iou: float | None = None, max_det: int = EVAL_MAX_DET) -> dict:
    """COCO mAP@[.5:.95], mAP@.5 and per class of `detector.detect` on a DetectionSet (helper D's metric)."""
    from unirep.detection.metrics import detection_map

    detector.eval()
    predictions = []
    for begin in range(0, len(split), batch_size):
        indices = range(begin, min(begin + batch_size, len(split)))
        images = stack_images([split.image(i) for i in indices])
        predictions += [d.to_dict() for d in detector.detect(images, conf=conf, iou=iou, max_det=max_det)]
    targets = [split.target(i) for i in range(len(split))]
    return detection_map(predictions, targets, num_classes=detector.num_classes)


# ---------------------------------------------------------------------------------------------------- RetinaNet


def _train_retinanet(cfg: DetectorTrainConfig, out: Path) -> tuple[Detector, dict]:
    from unirep.detection.detectors.retinanet import RetinaNetDetector
    from unirep.detection.detectors.retinanet_training import fit_retinanet

    splits, source = _task_splits(cfg.task)
    detector = RetinaNetDetector.build(splits["train"].classes, cfg.model_config, pretrained=True)
    fit = fit_retinanet(detector, splits["train"], splits["val"], out / "lightning", epochs=cfg.epochs or 12,
                        batch_size=cfg.batch_size, lr=cfg.lr or 1e-3, seed=cfg.seed)
    return detector, {**source, "fit": fit, "eval": _eval_settings(detector), "image_size": _side(splits)}, splits


def _eval_settings(detector: Detector) -> dict:
    return {"conf": EVAL_CONF, "iou": detector.default_iou, "max_det": EVAL_MAX_DET,
            "metric": "unirep.detection.metrics.detection_map (torchmetrics MeanAveragePrecision, pycocotools)"}


# ---------------------------------------------------------------------------------------------------------- YOLO


def write_yolo_dataset(splits: Mapping[str, Any], root: Path) -> Path:
    """A YOLO-format folder (`images/<split>/*.png`, `labels/<split>/*.txt`: `class cx cy w h`, normalised) and its
    `data.yaml`, written last: a folder whose data.yaml names the same content digest is reused as it is."""
    import yaml
    from PIL import Image

    classes = next(iter(splits.values())).classes
    digest = sha256_json({s: [split.ids, [split.target(i)["boxes"].tolist() for i in range(len(split))]]
                          for s, split in splits.items()})
    data_yaml = root / "data.yaml"
    if data_yaml.is_file() and yaml.safe_load(data_yaml.read_text(encoding="utf-8")).get("unirep_digest") == digest:
        return data_yaml
    for name, split in splits.items():
        (root / "images" / name).mkdir(parents=True, exist_ok=True)
        (root / "labels" / name).mkdir(parents=True, exist_ok=True)
        for i, example_id in enumerate(split.ids):
            stem = example_id.replace("/", "_")
            pixels = split.array(i)
            Image.fromarray(pixels).save(root / "images" / name / f"{stem}.png")
            target = split.target(i)
            height, width = pixels.shape[:2]
            lines = []
            for (x1, y1, x2, y2), label in zip(target["boxes"].tolist(), target["labels"].tolist()):
                lines.append(f"{label} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                             f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
            atomic_write_text(root / "labels" / name / f"{stem}.txt", "\n".join(lines) + ("\n" if lines else ""))
    content = {"path": str(root.resolve()), "train": "images/train", "val": "images/val",
               **({"test": "images/test"} if "test" in splits else {}), "names": dict(enumerate(classes)),
               "unirep_digest": digest}
    atomic_write_text(data_yaml, yaml.safe_dump(content, sort_keys=False))
    return data_yaml


def _train_yolo(cfg: DetectorTrainConfig, out: Path) -> tuple[Detector, dict]:
    from unirep.detection.detectors.yolo import YOLODetector, detector_from_weights, train_yolo, ultralytics_val

    if cfg.task is not None:
        splits, source = _task_splits(cfg.task)
        data_yaml = write_yolo_dataset(splits, out / "dataset")
        classes = splits["train"].classes
        image_size = cfg.image_size or _side(splits)
    else:
        splits, source, data_yaml = None, {"data": str(cfg.data)}, Path(cfg.data)
        classes = _data_yaml_classes(data_yaml)
        image_size = cfg.image_size or 640
    model_config = {"model_yaml": "yolov8n.yaml", **cfg.model_config}
    if cfg.weights:
        detector = detector_from_weights(cfg.weights, classes, model_config)
    else:
        torch.manual_seed(cfg.seed)
        detector = YOLODetector.build(classes, model_config)
    overrides = {"lr0": cfg.lr} if cfg.lr else {}
    val = {}
    if (cfg.epochs or 0) > 0 or cfg.epochs is None:
        val = train_yolo(detector, data_yaml, out, epochs=cfg.epochs or 60, imgsz=image_size, batch=cfg.batch_size,
                         seed=cfg.seed, **overrides)
    extra = {**source, "fit": {"ultralytics_val": val, "imgsz": image_size}, "eval": _eval_settings(detector),
             "image_size": image_size,
             "test_ultralytics_val": ultralytics_val(detector, data_yaml, "test" if splits is not None else "val",
                                                     image_size)}
    return detector, extra, splits


def _side(splits: Mapping[str, Any]) -> int:
    """The longer side of the first training image: the resolution the detector is trained and read at."""
    return int(max(splits["train"].image(0).shape[-2:]))


def _data_yaml_classes(path: Path) -> tuple[str, ...]:
    import yaml

    if not path.is_file():
        raise ConfigError(f"--data {str(path)!r}: no such file; give an ultralytics data.yaml")
    names = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("names")
    if isinstance(names, dict):
        return tuple(str(names[k]) for k in sorted(names))
    if isinstance(names, list) and names:
        return tuple(str(n) for n in names)
    raise ConfigError(f"{path}: no 'names' (a list or an index -> name mapping): an ultralytics data.yaml needs one")


def read_record(out: Path) -> dict:
    return json.loads((out / "detector.json").read_text(encoding="utf-8"))


__all__ = ["DetectorTrainConfig", "TrainedDetector", "evaluate_detector", "train_detector",
           "write_yolo_dataset"]
