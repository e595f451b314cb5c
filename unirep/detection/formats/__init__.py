"""Users' own detection data as task cards: COCO jsons, YOLO folders, ultralytics data.yaml.

A card (any folder; relative paths are relative to the card's folder; `--task-card` or UNIREP_TASK_DIRS):

    name: my-boxes
    description: Insects on sticky traps
    classes: [aphid, thrips]         # optional for coco / ultralytics (from the data), required for yolo
    metric: coco_map                 # the only detection metric (COCO mAP@[.5:.95])
    seed: 0
    data:
      format: coco                   # coco | yolo | ultralytics
      train: annotations/train.json  # coco: one instances json per split
      val: annotations/val.json      # a split the data does not give is carved out of train (seeded)
      test: annotations/test.json
      images: images                 # coco: the folder file_name is relative to (default: the json's folder)
      # format: yolo  ->  root: dataset           (dataset/images/{train,val,test}/, dataset/labels/...)
      # format: ultralytics  ->  yaml: dataset/data.yaml
      empty_images: keep             # images without annotations: keep (background images) or refuse
      val_fraction: 0.2
      test_fraction: 0.2

`unirep eval BACKBONE --task-card my-boxes.yaml --tasks my-boxes --protocols detection`.
"""

from __future__ import annotations

from pathlib import Path

from unirep.detection.data import DetectionSet
from unirep.detection.formats.coco import read_coco_json
from unirep.detection.formats.common import SplitRecords, carve
from unirep.detection.formats.yolo import read_data_yaml, read_yolo_folder
from unirep.errors import ConfigError, DataError
from unirep.fileio import atomic_write_json, sha256_file, sha256_json
from unirep.registry import Registry
from unirep.tasks.base import SPLITS, TaskCard
from unirep.tasks.card_fields import checked_card_fields
from unirep.tasks.detection.base import DetectionTask

FORMATS = ("coco", "yolo", "ultralytics")
CARD_KEYS = {"name", "description", "classes", "metric", "seed", "source", "licence", "split", "suites", "provides",
             "data"}
DATA_KEYS = {"format", "train", "val", "test", "images", "root", "yaml", "empty_images", "val_fraction",
             "test_fraction", "manifest"}
READERS: Registry = Registry("detection format")


def read_detection_card(path: Path, raw: dict) -> TaskCard:
    """Check a detection card `raw` read from `path`; data paths become absolute."""
    # A detection task is scored with coco_map only; `classes` are read again below (optional for coco/ultralytics).
    name, metric, _ = checked_card_fields(path, raw, CARD_KEYS, default_metric="coco_map", metrics=["coco_map"])
    data = dict(raw["data"])
    unknown = sorted(set(data) - DATA_KEYS)
    if unknown:
        raise ConfigError(f"task card {path}: unknown data field(s) {unknown}; allowed: {sorted(DATA_KEYS)}")
    needed = {"coco": "train", "yolo": "root", "ultralytics": "yaml"}[data["format"]]
    if not data.get(needed):
        raise ConfigError(f"task card {path}: data.{needed} is required for format {data['format']}")
    for key in ("train", "val", "test", "images", "root", "yaml", "manifest"):
        if data.get(key):
            data[key] = str((path.parent / Path(str(data[key])).expanduser()).resolve())
    data.setdefault("manifest", str(path.parent / "manifests" / f"{name}.json"))
    data.setdefault("empty_images", "keep")
    if data["empty_images"] not in ("keep", "refuse"):
        raise ConfigError(f"task card {path}: data.empty_images must be keep (background images) or refuse, got "
                          f"{data['empty_images']!r}")
    for key in ("val_fraction", "test_fraction"):
        data[key] = float(data.get(key, 0.2))
        if not 0.0 < data[key] < 1.0:
            raise ConfigError(f"task card {path}: data.{key} must be between 0 and 1")
    classes = tuple(str(c) for c in raw.get("classes") or ())
    if data["format"] == "yolo" and not classes:
        raise ConfigError(f"task card {path}: a YOLO folder has no class names: list them under classes")
    return TaskCard(name=name, description=str(raw.get("description", "")), classes=classes, metric=metric,
                    counts={}, source=str(raw.get("source", data.get(needed))), licence=str(raw.get("licence", "")),
                    split=str(raw.get("split", "given by the data; a missing val / test split is carved out of train "
                                               "(seeded)")),
                    suites=tuple(raw.get("suites") or ()), seed=int(raw.get("seed", 0)),
                    provides=str(raw.get("provides", f"the files named in {path}")),
                    extra={"kind": "detection", "data": data, "card_path": str(path)})


@READERS.register("coco")
def read_coco(data: dict, classes: tuple[str, ...]) -> tuple[dict[str, SplitRecords], tuple[str, ...], list[Path]]:
    splits, names, files = {}, classes or None, []
    for split in SPLITS:
        if data.get(split):
            json_path = Path(data[split])
            images = Path(data["images"]) if data.get("images") else json_path.parent
            splits[split], names = read_coco_json(json_path, images, data["empty_images"], names)
            files.append(json_path)
    return splits, tuple(names or ()), files


@READERS.register("yolo")
def read_yolo(data: dict, classes: tuple[str, ...]) -> tuple[dict[str, SplitRecords], tuple[str, ...], list[Path]]:
    root = Path(data["root"])
    folders = {s: root / "images" / s for s in SPLITS if (root / "images" / s).is_dir()}
    return _yolo_splits(folders, classes, data)


@READERS.register("ultralytics")
def read_ultralytics(data: dict, classes: tuple[str, ...]
                     ) -> tuple[dict[str, SplitRecords], tuple[str, ...], list[Path]]:
    folders, names = read_data_yaml(Path(data["yaml"]))
    if classes and tuple(classes) != names:
        raise DataError(f"{data['yaml']}: names {list(names)} differ from the card's classes {list(classes)}")
    splits, names, files = _yolo_splits(folders, names, data)
    return splits, names, [Path(data["yaml"]), *files]


def _yolo_splits(folders: dict[str, Path], names: tuple[str, ...], data: dict):
    if "train" not in folders:
        raise DataError(f"no train images: expected a folder {folders.get('train', 'images/train')}")
    splits = {s: read_yolo_folder(folder, len(names)) for s, folder in folders.items()}
    if data["empty_images"] == "refuse":
        for split, records in splits.items():
            empty = [w for w, b in zip(records.wheres, records.boxes, strict=True) if not len(b)]
            if empty:
                raise DataError(f"{len(empty)} {split} image(s) have no labels, e.g. {empty[0]}, and the card says "
                                "data.empty_images: refuse; label them, remove them, or set empty_images: keep")
    return splits, names, [p for records in splits.values() for p in records.paths]


class DetectionCardTask(DetectionTask):
    """A detection task declared by a card: the data's splits (missing ones carved out of train), checked, and a
    manifest written next to the card (`data.manifest`)."""

    def load_splits(self) -> tuple[dict[str, DetectionSet], str]:
        data = self.card.extra["data"]
        records, names, files = READERS.get(data["format"])(data, self.card.classes)
        if not names:
            raise DataError(f"task {self.name!r}: no class names in the data; list them under classes in the card")
        if "test" not in records:
            records["train"], records["test"] = carve(records["train"], data["test_fraction"], self.card.seed, 2)
        if "val" not in records:
            records["train"], records["val"] = carve(records["train"], data["val_fraction"], self.card.seed, 1)
        for split in SPLITS:
            records[split].check_files()
        # The files' contents (annotation files and images), not their paths: moving the folder keeps the hash.
        sha = sha256_json(sorted(sha256_file(p) for p in set(files)))
        self._names = names
        splits = {s: records[s].to_set(names, self.name) for s in SPLITS}
        self._write_manifest(splits, sha)
        return splits, sha

    @property
    def classes(self) -> tuple[str, ...]:
        return getattr(self, "_names", self.card.classes)

    def _write_manifest(self, splits: dict[str, DetectionSet], sha: str) -> None:
        content = {"task": self.name, "seed": self.card.seed, "data_sha256": sha,
                   "counts": {s: len(splits[s]) for s in SPLITS}, "splits": {s: splits[s].ids for s in SPLITS}}
        try:
            atomic_write_json(self.card.extra["data"]["manifest"], content)
        except OSError:
            pass  # a read-only data folder: the manifest still goes into every record
