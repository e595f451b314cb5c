"""COCO-format detection data: one instances json per split (`images`, `annotations` with `bbox` [x, y, w, h] in
pixels, `categories`), image files relative to an image folder.

Category ids (any integers) become labels 0..K-1 in increasing id order; class names are the categories' names.
Checked, each a one-line DataError naming the json, the image id and the annotation id: boxes of zero (or
negative) width or height, boxes reaching outside the image (beyond `width` / `height` as the json states them),
annotations whose category is not in `categories` or whose image is not in `images`; an image listed without
annotations is kept as a background image or refused, as the card's `empty_images` says. Crowd annotations
(`iscrowd: 1`) are refused: unirep's mAP has no crowd regions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from unirep.detection.formats.common import SplitRecords
from unirep.errors import DataError

EDGE_TOLERANCE = 1e-3  # px: float rounding in exported jsons, not a box outside the image


def read_coco_json(path: Path, images_dir: Path, empty_images: str, classes: tuple[str, ...] | None = None
                   ) -> tuple[SplitRecords, tuple[str, ...]]:
    """(the split's images, boxes and labels, the class names) of one COCO instances json."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read COCO json {path}: {exc}; give a COCO instances file") from None
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), list) for k in ("images", "annotations",
                                                                                    "categories")):
        raise DataError(f"COCO json {path} needs lists 'images', 'annotations' and 'categories'")
    categories = sorted(raw["categories"], key=lambda c: int(c["id"]))
    label_of = {int(c["id"]): i for i, c in enumerate(categories)}
    names = tuple(str(c.get("name", c["id"])) for c in categories)
    if classes is not None and names != tuple(classes):
        raise DataError(f"COCO json {path}: categories {list(names)} differ from the card's classes {list(classes)} "
                        "(in category-id order); fix the card's classes or leave them out")
    images = {}
    for image in raw["images"]:
        try:
            images[int(image["id"])] = (str(image["file_name"]), int(image["width"]), int(image["height"]))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"COCO json {path}: image entry {image!r:.80} needs id, file_name, width and "
                            "height") from None
    boxes: dict[int, list[list[float]]] = {i: [] for i in images}
    labels: dict[int, list[int]] = {i: [] for i in images}
    for ann in raw["annotations"]:
        where = f"COCO json {path}: annotation id {ann.get('id')} (image id {ann.get('image_id')})"
        image_id = int(ann.get("image_id", -1))
        if image_id not in images:
            raise DataError(f"{where}: its image id is not among the json's images")
        category = int(ann.get("category_id", -1))
        if category not in label_of:
            raise DataError(f"{where}: category_id {category} is not in categories {sorted(label_of)}; add the "
                            "category or remove the annotation")
        if ann.get("iscrowd", 0):
            raise DataError(f"{where}: crowd annotations (iscrowd: 1) are not supported; remove them")
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}: bbox must be [x, y, width, height] in pixels") from None
        _, width, height = images[image_id]
        if w <= 0 or h <= 0:
            raise DataError(f"{where}: box [x={x:g}, y={y:g}, w={w:g}, h={h:g}] has zero or negative "
                            f"{'width' if w <= 0 else 'height'}; fix or remove it")
        if x < -EDGE_TOLERANCE or y < -EDGE_TOLERANCE or x + w > width + EDGE_TOLERANCE or \
                y + h > height + EDGE_TOLERANCE:
            raise DataError(f"{where}: box [x={x:g}, y={y:g}, w={w:g}, h={h:g}] reaches outside the "
                            f"{width}x{height} image; clip or fix it")
        boxes[image_id].append([x, y, x + w, y + h])
        labels[image_id].append(label_of[category])
    records = SplitRecords()
    for image_id, (file_name, width, height) in sorted(images.items()):
        if not boxes[image_id] and empty_images == "refuse":
            raise DataError(f"COCO json {path}: image id {image_id} ({file_name}) has no annotations, and the card "
                            "says data.empty_images: refuse; annotate it, remove it, or set empty_images: keep "
                            "(background)")
        records.add(f"{image_id}", images_dir / file_name, (height, width),
                    np.asarray(boxes[image_id], np.float32).reshape(-1, 4), np.asarray(labels[image_id], np.int64),
                    f"{path.name} image id {image_id}")
    return records, names


def write_coco_json(path: Path, file_names: list[str], sizes: list[tuple[int, int]], boxes: list[np.ndarray],
                    labels: list[np.ndarray], classes: tuple[str, ...]) -> None:
    """A COCO instances json of xyxy boxes (what unirep exports; the readers' tests write fixtures with it)."""
    from unirep.fileio import atomic_write_json

    annotations = []
    for image_id, (image_boxes, image_labels) in enumerate(zip(boxes, labels, strict=True)):
        for box, label in zip(np.asarray(image_boxes).tolist(), np.asarray(image_labels).tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label) + 1,
                                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
    atomic_write_json(path, {
        "images": [{"id": i, "file_name": f, "height": s[0], "width": s[1]}
                   for i, (f, s) in enumerate(zip(file_names, sizes, strict=True))],
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(classes)]})
