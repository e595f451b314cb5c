"""YOLO-format detection data (ultralytics' layout): `images/<split>/*.jpg` with `labels/<split>/<stem>.txt`, one
object per line `class cx cy w h`, coordinates normalised to 0..1 by the image's width and height; an image
without a label file (or with an empty one) is a background image, as in ultralytics. An ultralytics `data.yaml`
(`path`, `train`, `val`, optional `test` folders, `names` as a list or an {id: name} mapping) names the folders
and the classes.

Checked, each a one-line DataError naming the file and the line: a class id outside 0..K-1, a line that is not five
numbers, coordinates outside 0..1, a zero-width or zero-height box.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from unirep.detection.formats.common import SplitRecords
from unirep.errors import DataError, yaml_problem

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
EDGE_TOLERANCE = 1e-6


def label_path(image: Path) -> Path:
    """ultralytics' rule (img2label_paths): the last `images` folder of the path becomes `labels`, suffix .txt."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def read_yolo_folder(images_dir: Path, num_classes: int) -> SplitRecords:
    """Every image under `images_dir` (sorted) with the boxes of its label file, in pixels."""
    if not images_dir.is_dir():
        raise DataError(f"YOLO image folder {images_dir} does not exist; fix the card's data section or data.yaml")
    files = sorted(p for p in images_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images under {images_dir} (extensions {', '.join(IMAGE_SUFFIXES)})")
    records = SplitRecords()
    for path in files:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except OSError as exc:
            raise DataError(f"cannot read image {path}: {exc}; remove or replace it") from None
        boxes, labels = read_label_file(label_path(path), width, height, num_classes)
        records.add(path.relative_to(images_dir).with_suffix("").as_posix(), path, (height, width), boxes, labels,
                    str(path))
    return records


def read_label_file(path: Path, width: int, height: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """xyxy pixel boxes and labels of one label file (none when it does not exist)."""
    boxes, labels = [], []
    if not path.is_file():
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            if len(fields) != 5:
                raise ValueError
            class_id, cx, cy, w, h = int(fields[0]), *(float(v) for v in fields[1:])
        except ValueError:
            raise DataError(f"{path} line {number}: expected 'class cx cy w h' (an integer and four numbers), got "
                            f"{line.strip()!r:.60}") from None
        if not 0 <= class_id < num_classes:
            raise DataError(f"{path} line {number}: class id {class_id} is outside 0..{num_classes - 1} (the "
                            f"{num_classes} classes of the card / data.yaml names)")
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        if w <= 0 or h <= 0:
            raise DataError(f"{path} line {number}: a box of zero or negative width or height ({w:g} x {h:g})")
        if min(x1, y1) < -EDGE_TOLERANCE or max(x2, y2) > 1 + EDGE_TOLERANCE:
            raise DataError(f"{path} line {number}: normalised box {cx:g} {cy:g} {w:g} {h:g} reaches outside the "
                            "image (coordinates must be within 0..1)")
        boxes.append([max(x1, 0.0) * width, max(y1, 0.0) * height, min(x2, 1.0) * width, min(y2, 1.0) * height])
        labels.append(class_id)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


def read_data_yaml(path: Path) -> tuple[dict[str, Path], tuple[str, ...]]:
    """({split: image folder}, class names) of an ultralytics data.yaml (`path` relative to the yaml's folder)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DataError(f"{path} is not valid YAML ({yaml_problem(exc)})") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}; fix data.yaml in the task card") from None
    if not isinstance(raw, dict) or "train" not in raw or "names" not in raw:
        raise DataError(f"{path}: an ultralytics data.yaml needs train, val and names (and optionally path, test)")
    names = raw["names"]
    if isinstance(names, dict):
        if sorted(int(k) for k in names) != list(range(len(names))):
            raise DataError(f"{path}: names must map the ids 0..{len(names) - 1}, got {sorted(names)}")
        names = [names[k] for k in sorted(names, key=int)]
    root = Path(raw.get("path") or ".")
    root = root if root.is_absolute() else path.parent / root
    splits = {}
    for split in ("train", "val", "test"):
        value = raw.get(split)
        if value:
            if not isinstance(value, str):
                raise DataError(f"{path}: {split} must be one image folder (lists and .txt image lists are not "
                                "supported here)")
            folder = Path(value)
            splits[split] = folder if folder.is_absolute() else root / folder
    return splits, tuple(str(n) for n in names)


def write_yolo_split(images_dir: Path, file_names: list[str], images: list[np.ndarray], boxes: list[np.ndarray],
                     labels: list[np.ndarray]) -> None:
    """Images and YOLO label files of one split (what unirep exports; the readers' tests write fixtures with it)."""
    from unirep.fileio import atomic_write_text

    for name, pixels, image_boxes, image_labels in zip(file_names, images, boxes, labels, strict=True):
        path = images_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        height, width = pixels.shape[:2]
        lines = [f"{int(c)} {(b[0] + b[2]) / 2 / width:.6f} {(b[1] + b[3]) / 2 / height:.6f} "
                 f"{(b[2] - b[0]) / width:.6f} {(b[3] - b[1]) / height:.6f}"
                 for b, c in zip(np.asarray(image_boxes).tolist(), np.asarray(image_labels).tolist(), strict=True)]
        atomic_write_text(label_path(path), "\n".join(lines) + ("\n" if lines else ""))
