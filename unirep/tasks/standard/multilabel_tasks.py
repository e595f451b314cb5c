"""Multi-label standard datasets: labels are (N, C) targets, 1 = present, 0 = absent, -1 = ignored when scoring
(PASCAL VOC's 'difficult'-only objects, which the VOC devkit leaves out of its AP), scored by mAP with the
one-vs-rest probe `linear-multilabel`.

    VOCdevkit/VOC2007/{JPEGImages, Annotations, ImageSets/Main/{train,val,test}.txt}   torchvision's VOC layout
    VOCdevkit/VOC2012/{JPEGImages, Annotations, ImageSets/Main/{train,val}.txt}
    nuswide-obj/{train.csv, test.csv, images/...}   unirep's layout: CSV columns path,labels (';'-separated)
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from unirep.errors import DataError
from unirep.fileio import sha256_json
from unirep.tasks import register_task
from unirep.tasks.standard._common import Part, Parts, StandardTask, files_fingerprint, hash_files


class VOCTask(StandardTask):
    """PASCAL VOC classification from the detection annotations, read through torchvision's VOCDetection.
    `image_sets` maps unirep's official parts to VOC image sets."""

    year = ""
    image_sets: dict[str, str] = {}

    @property
    def folder(self) -> str:  # type: ignore[override]
        return f"VOCdevkit/VOC{self.year}"

    def open(self, image_set: str, download: bool = False):
        import torchvision.datasets  # deferred: importing torchvision costs ~1 s

        try:
            return torchvision.datasets.VOCDetection(str(self.root), year=self.year, image_set=image_set,
                                                     download=download)
        except (RuntimeError, FileNotFoundError) as exc:
            raise self.missing(self.root / self.folder, str(exc).split(".")[0]) from None

    def fetch(self) -> None:
        for image_set in self.image_sets.values():
            self.open(image_set, download=True)

    def read_parts(self) -> Parts:
        self.require(*(f"{self.folder}/ImageSets/Main/{s}.txt" for s in self.image_sets.values()),
                     f"{self.folder}/Annotations", f"{self.folder}/JPEGImages")
        parts, annotation_paths = {}, []
        for split, image_set in self.image_sets.items():
            dataset = self.open(image_set)
            targets = np.stack([self._targets(dataset, Path(t)) for t in dataset.targets]) if dataset.targets else \
                np.zeros((0, self.card.num_classes), dtype=np.int8)
            paths = [Path(p) for p in dataset.images]
            parts[split] = Part(ids=[p.stem for p in paths], labels=targets, paths=paths)
            annotation_paths += [Path(t) for t in dataset.targets]
        lists = [self.root / self.folder / "ImageSets" / "Main" / f"{s}.txt" for s in self.image_sets.values()]
        # Annotations are small XML files: hash them in full, since they define the labels.
        sha = sha256_json({"lists": hash_files(lists, self.root),
                           "annotations": hash_files(annotation_paths, self.root),
                           "images": files_fingerprint([p for part in parts.values() for p in part.paths], self.root)})
        return Parts(parts, list(self.card.classes), sha)

    def _targets(self, dataset, path: Path) -> np.ndarray:
        """+1 if any non-difficult object of the class, -1 if only difficult ones, 0 if none (VOC devkit rule)."""
        from xml.etree.ElementTree import ParseError, parse

        try:
            annotation = dataset.parse_voc_xml(parse(path).getroot())["annotation"]
        except (OSError, ParseError) as exc:
            raise DataError(f"cannot read VOC annotation {path}: {exc}; re-download VOC{self.year}") from None
        targets = np.zeros(self.card.num_classes, dtype=np.int8)
        position = {name: i for i, name in enumerate(self.card.classes)}
        objects = annotation.get("object", [])
        for obj in objects if isinstance(objects, list) else [objects]:
            name = obj["name"].strip()
            if name not in position:
                raise DataError(f"{path}: object class {name!r} is not a VOC class")
            difficult = str(obj.get("difficult", "0")).strip() == "1"
            i = position[name]
            targets[i] = 1 if not difficult else (targets[i] if targets[i] == 1 else -1)
        return targets


@register_task("voc2007")
class VOC2007Task(VOCTask):
    """VOC2007: official train 2,501 / val 2,510 / test 4,952."""

    year = "2007"
    image_sets = {"train": "train", "val": "val", "test": "test"}


@register_task("voc2012")
class VOC2012Task(VOCTask):
    """VOC2012: the test labels are withheld (evaluation server), so the official val (5,823) is the test split
    and val is carved out of the official train (5,717)."""

    year = "2012"
    image_sets = {"train": "train", "test": "val"}


@register_task("nuswide-obj")
class NUSWideObjectTask(StandardTask):
    """NUS-WIDE-Object (Chua et al. 2009): 31 object concepts, multi-label. Its images are Flickr URLs, so the
    layout is unirep's: `train.csv` / `test.csv` with columns path (relative to images/) and labels (class names
    separated by ';', from the card's list; empty = none). Counts come from the data (`counts_from_data`)."""

    folder = "nuswide-obj"

    def read_parts(self) -> Parts:
        train_csv, test_csv, images = self.require(f"{self.folder}/train.csv", f"{self.folder}/test.csv",
                                                   f"{self.folder}/images")
        position = {name: i for i, name in enumerate(self.card.classes)}
        parts = {}
        for split, table in (("train", train_csv), ("test", test_csv)):
            ids, rows, paths = [], [], []
            with open(table, encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle)
                if reader.fieldnames is None or not {"path", "labels"} <= set(reader.fieldnames):
                    raise DataError(f"{table}: expected a header with columns path,labels")
                for line, row in enumerate(reader, start=2):
                    names = [n.strip() for n in (row["labels"] or "").split(";") if n.strip()]
                    unknown = [n for n in names if n not in position]
                    if unknown:
                        raise DataError(f"{table}, row {line}: label(s) {unknown} not in the card's classes")
                    path = images / row["path"]
                    if not path.is_file():
                        raise DataError(f"{table}, row {line}: image {path} not found")
                    target = np.zeros(len(position), dtype=np.int8)
                    target[[position[n] for n in names]] = 1
                    ids.append(row["path"])
                    rows.append(target)
                    paths.append(path)
            parts[split] = Part(ids=ids, labels=np.stack(rows), paths=paths)
        sha = sha256_json({"lists": hash_files([train_csv, test_csv], self.root),
                           "images": files_fingerprint([p for part in parts.values() for p in part.paths], self.root)})
        return Parts(parts, list(self.card.classes), sha)
