"""The detector contract every trained detector honours (torchvision RetinaNet, ultralytics YOLOv8), and the
checkpoint folder they share.

At the boundary a detector looks like torchvision's detection models: a batch of images in, one result per image
out (`Detections`: boxes, scores, labels), plus what explanation methods need and torchvision does not give:

- `class_scores` (N, C): the per-class probability vector of each kept box, read at the anchor (RetinaNet) or grid
  cell (YOLO) the box came from, before NMS picked its label; D-RISE compares these vectors. Each box has exactly
  one label, the argmax of its vector (one detection per anchor, as ultralytics' NMS with `multi_label=False`).
- `raw(images)`: the dense pre-NMS outputs as differentiable tensors (boxes (B, A, 4) xyxy pixels, class scores
  (B, A, C)), for gradient methods, which cannot pass through NMS.
- `cam_target_layers()`: the modules whose activations a CAM method reads (tensor-valued, not FPN dicts).

A checkpoint is a folder: `weights.safetensors` (the module's state dict) and `detector.json` (kind, classes, the
config the module is rebuilt from, training record), the json written last, so a folder holding it is complete.
`load_detector(folder)` rebuilds any kind through the registry.

Example:
    >>> from unirep.detection.detectors import load_detector
    >>> detector = load_detector("runs/detectors/retinanet")
    >>> (result,) = detector.detect(images[:1], conf=0.25)
    >>> result.boxes.shape, result.class_scores.shape
    (torch.Size([3, 4]), torch.Size([3, 5]))
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from unirep.errors import DataError, WeightsError
from unirep.fileio import atomic_write_bytes, atomic_write_json, sha256_file
from unirep.registry import Registry

# What detection mAP is computed on (training's val choice, the test record): every box above this score, up to
# COCO's 100 per image.
EVAL_CONF = 0.001
EVAL_MAX_DET = 100
FORMAT = "unirep-detector"
FORMAT_VERSION = 1
METADATA_FILE = "detector.json"
WEIGHTS_FILE = "weights.safetensors"


@dataclass
class Detections:
    """The kept detections of one image, in that image's pixel coordinates.

    Attributes:
        boxes: (N, 4) float32 xyxy pixels.
        scores: (N,) float32, the confidence of each box (its label's probability).
        labels: (N,) int64 class indices into `Detector.classes`.
        class_scores: (N, C) float32, every class's probability at the box's anchor/cell; `argmax(1) == labels`.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    class_scores: torch.Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def to_dict(self) -> dict[str, torch.Tensor]:
        """torchvision's / torchmetrics' prediction dict (boxes, scores, labels; class_scores too)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Detector(nn.Module):
    """A trained detector. Subclasses set `kind` and implement `build`, `preprocess`, `raw`, `detect`,
    `cam_target_layers`; `module` is the wrapped network (torchvision RetinaNet or ultralytics DetectionModel).

    Attributes:
        classes: the class names, index = label.
        config: what `build` rebuilds the module from (json-able); stored in detector.json.
    """

    kind: ClassVar[str]
    default_conf: ClassVar[float] = 0.25
    default_iou: ClassVar[float] = 0.5

    def __init__(self, module: nn.Module, classes: tuple[str, ...], config: Mapping[str, Any]):
        super().__init__()
        self.module = module
        self.classes = tuple(classes)
        self.config = dict(config)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def build(cls, classes: tuple[str, ...], config: Mapping[str, Any]) -> Detector:  # pragma: no cover - abstract
        """A detector of this kind with freshly initialised weights, from its stored config."""
        raise NotImplementedError

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """uint8 (B, 3, H, W) -> the float input of `module` (normalised, padded to the network's stride)."""
        raise NotImplementedError

    def raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        """Dense pre-NMS outputs, differentiable: boxes (B, A, 4) xyxy pixels, class scores (B, A, C) in [0, 1].
        `images` may be uint8 or float (already `preprocess`ed: gradients then flow back to the input)."""
        raise NotImplementedError

    def detect(self, images: torch.Tensor, conf: float | None = None, iou: float | None = None,
               max_det: int = 100) -> list[Detections]:  # pragma: no cover - abstract
        raise NotImplementedError

    def cam_target_layers(self) -> list[nn.Module]:  # pragma: no cover - abstract
        raise NotImplementedError

    def save(self, directory: str | Path, record: Mapping[str, Any] | None = None) -> Path:
        """Write `weights.safetensors` then `detector.json` (atomic each); returns the folder."""
        return write_detector(directory, self, record or {})


DETECTORS: Registry[type[Detector]] = Registry("detector")
register_detector = DETECTORS.register

# Modules that register detector kinds. Imported lazily: ultralytics only loads when a YOLO is asked for.
DETECTOR_MODULES = ("unirep.detection.detectors.retinanet", "unirep.detection.detectors.yolo")


def detector_class(kind: str) -> type[Detector]:
    import importlib

    for module in DETECTOR_MODULES:
        importlib.import_module(module)
    return DETECTORS.get(kind)


def check_images(images: torch.Tensor, where: str) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise DataError(f"{where}: images must be a (B, 3, H, W) batch, got shape {tuple(images.shape)}")


def pad_to_stride(batch: torch.Tensor, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad (B, C, H, W) at the bottom/right to multiples of `stride`; pixel coordinates stay those of the image."""
    height, width = batch.shape[-2:]
    pad_h, pad_w = (-height) % stride, (-width) % stride
    if not (pad_h or pad_w):
        return batch
    return torch.nn.functional.pad(batch, (0, pad_w, 0, pad_h), value=value)


def stack_images(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """One uint8 batch; images of different sizes are padded at the bottom/right (boxes keep their pixels)."""
    height, width = max(i.shape[1] for i in images), max(i.shape[2] for i in images)
    batch = torch.zeros((len(images), 3, height, width), dtype=torch.uint8)
    for slot, image in zip(batch, images):
        slot[:, :image.shape[1], :image.shape[2]] = image
    return batch


def select_detections(boxes: torch.Tensor, class_scores: torch.Tensor, conf: float, iou: float, max_det: int,
                      max_candidates: int = 1000) -> Detections:
    """NMS over one image's dense outputs, one detection per anchor: its best class is its label and score (as
    ultralytics' `non_max_suppression(multi_label=False)`), boxes below `conf` dropped, the `max_candidates` best
    kept, class-aware NMS at `iou`, then the `max_det` best. The class vector of each kept anchor is returned."""
    from torchvision.ops import batched_nms

    scores, labels = class_scores.max(dim=1)
    keep = torch.nonzero(scores > conf).squeeze(1)
    keep = keep[scores[keep].argsort(descending=True)[:max_candidates]]
    kept = batched_nms(boxes[keep].float(), scores[keep].float(), labels[keep], iou)[:max_det]
    index = keep[kept]
    return Detections(boxes[index].float(), scores[index].float(), labels[index].long(), class_scores[index].float())


def write_detector(directory: str | Path, detector: Detector, record: Mapping[str, Any]) -> Path:
    from safetensors.torch import save

    directory = Path(directory)
    tensors = {key: value.detach().cpu().contiguous() for key, value in detector.module.state_dict().items()}
    weights = atomic_write_bytes(directory / WEIGHTS_FILE, save(tensors, metadata={"format": FORMAT}))
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": detector.kind,
                "classes": list(detector.classes), "config": detector.config, "weights_file": WEIGHTS_FILE,
                "weights_sha256": sha256_file(weights), **dict(record)}
    atomic_write_json(directory / METADATA_FILE, metadata)
    return directory


def read_detector_metadata(directory: str | Path) -> dict:
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise WeightsError(f"{str(directory)!r} is not a finished unirep detector (no {METADATA_FILE}): train one "
                           "with `unirep train-detector retinanet|yolov8n --task T --out DIR`")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: unreadable detector metadata ({exc}); re-run `unirep train-detector`") from None
    if metadata.get("format") != FORMAT or metadata.get("format_version") != FORMAT_VERSION:
        raise WeightsError(f"{path}: format {metadata.get('format')!r} v{metadata.get('format_version')} is not "
                           f"{FORMAT} v{FORMAT_VERSION}: re-train it with this unirep version")
    return metadata


def load_detector(directory: str | Path, num_classes: int | None = None) -> Detector:
    """Rebuild the detector stored in `directory` and load its safetensors weights strictly.

    Args:
        directory: a folder `unirep train-detector` wrote.
        num_classes: when given (a task's class count), a checkpoint for another count is refused in one line.
    """
    from unirep.backbones.weights import load_strict, read_state_dict

    directory = Path(directory)
    metadata = read_detector_metadata(directory)
    classes = tuple(metadata["classes"])
    check_class_count(len(classes), num_classes, where=str(directory))
    weights_path = directory / metadata["weights_file"]
    digest = sha256_file(weights_path) if weights_path.is_file() else None
    if digest != metadata["weights_sha256"]:
        raise WeightsError(f"{weights_path} is missing or does not match {METADATA_FILE} (sha256 {digest} vs "
                           f"{metadata['weights_sha256']}): the run was interrupted while writing; resume it")
    detector = detector_class(metadata["kind"]).build(classes, metadata["config"])
    load_strict(detector.module, read_state_dict(weights_path), where=f"{weights_path} ({metadata['kind']})")
    detector.metadata = metadata
    return detector.eval()


def check_class_count(found: int, expected: int | None, where: str) -> None:
    if expected is not None and found != expected:
        raise WeightsError(f"{where}: the detector has {found} classes but the task has {expected}: use a "
                           f"checkpoint trained on this task's classes, or train one with `unirep train-detector`")


def is_detector_dir(path: str | Path) -> bool:
    return (Path(path) / METADATA_FILE).is_file()


__all__ = ["DETECTORS", "EVAL_CONF", "EVAL_MAX_DET", "Detections", "Detector", "check_class_count", "check_images",
           "detector_class", "is_detector_dir", "load_detector", "pad_to_stride", "read_detector_metadata",
           "register_detector", "select_detections", "stack_images", "write_detector"]
