"""Standard datasets read through torchvision's dataset classes, in torchvision's own on-disk layout under the
data root (an existing torchvision root works as is; with downloads allowed torchvision fetches them).

Each adapter names the torchvision class, the official splits and the attributes holding image paths and labels;
torchvision parses the annotation files, unirep keeps only (path, label) so nothing decodes an image until a
feature extractor asks for it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unirep.errors import DataError
from unirep.fileio import sha256_json
from unirep.tasks import register_task
from unirep.tasks.standard._common import (
    Part,
    Parts,
    StandardTask,
    files_fingerprint,
    hash_files,
    list_images,
    part_from_files,
)


class TorchvisionTask(StandardTask):
    """An adapter over one torchvision dataset class.

    Subclasses set `tv_class` (name in torchvision.datasets), `splits` (official split -> constructor kwargs),
    `required` (paths under the root that must exist), `annotation_files` (hashed in full: they define labels and
    splits) and implement `samples(dataset) -> (paths, labels)`.
    """

    tv_class: str = ""
    splits: dict[str, dict] = {}
    required: tuple[str, ...] = ()
    annotation_files: tuple[str, ...] = ()

    def samples(self, dataset) -> tuple[Sequence, Sequence[int]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def class_names(self, dataset) -> list[str]:
        return [str(c) for c in dataset.classes]

    def open(self, download: bool = False, **kwargs):
        import torchvision.datasets  # deferred: importing torchvision costs ~1 s

        cls = getattr(torchvision.datasets, self.tv_class)
        try:
            return cls(str(self.root), download=download, **kwargs)
        except (RuntimeError, ValueError, FileNotFoundError) as exc:
            raise self.missing(self.root / self.folder, str(exc).split(".")[0]) from None

    def fetch(self) -> None:
        for kwargs in self.splits.values():
            self.open(download=True, **kwargs)

    def read_parts(self) -> Parts:
        self.require(*self.required)
        parts, names = {}, {}
        for split_name, kwargs in self.splits.items():
            dataset = self.open(**kwargs)
            paths, labels = self.samples(dataset)
            # torchvision numbers classes per split object (e.g. DTD: the classes present in that split's
            # file), so labels go through names to one numbering shared by all splits.
            split_names = self.class_names(dataset)
            ordinals = [names.setdefault(split_names[int(y)], len(names)) for y in labels]
            parts[split_name] = part_from_files(self.root, [Path(p) for p in paths], ordinals)
        return Parts(parts, list(names), self.data_hash(parts))

    def data_hash(self, parts: dict[str, Part]) -> str:
        annotations = hash_files([self.root / a for a in self.annotation_files], self.root)
        images = files_fingerprint([p for part in parts.values() for p in part.paths], self.root)
        return sha256_json({"annotations": annotations, "images": images})


@register_task("food101")
class Food101Task(TorchvisionTask):
    """Food-101 (Bossard et al. 2014): 101 dishes, official 75,750 train / 25,250 test."""

    folder = "food-101"
    tv_class = "Food101"
    splits = {"train": {"split": "train"}, "test": {"split": "test"}}
    required = ("food-101/meta/train.json", "food-101/meta/test.json", "food-101/images")
    annotation_files = ("food-101/meta/train.json", "food-101/meta/test.json")

    def samples(self, dataset):
        return dataset._image_files, dataset._labels


@register_task("stanford-cars")
class StanfordCarsTask(TorchvisionTask):
    """Stanford Cars (Krause et al. 2013): 196 make/model/year classes, official 8,144 train / 8,041 test."""

    folder = "stanford_cars"
    tv_class = "StanfordCars"
    splits = {"train": {"split": "train"}, "test": {"split": "test"}}
    required = ("stanford_cars/devkit/cars_meta.mat", "stanford_cars/devkit/cars_train_annos.mat",
                "stanford_cars/cars_test_annos_withlabels.mat", "stanford_cars/cars_train", "stanford_cars/cars_test")
    annotation_files = required[:3]

    def fetch(self) -> None:
        # torchvision's StanfordCars.download() raises: the original URL is gone (pytorch/vision#7545).
        raise self.missing(self.root / self.folder, "it can no longer be downloaded automatically")

    def samples(self, dataset):
        return [p for p, _ in dataset._samples], [int(t) for _, t in dataset._samples]


@register_task("fgvc-aircraft")
class FGVCAircraftTask(TorchvisionTask):
    """FGVC-Aircraft 2013b (Maji et al. 2013), variant level (100 classes): official train/val/test
    3,334/3,333/3,333."""

    folder = "fgvc-aircraft-2013b"
    tv_class = "FGVCAircraft"
    splits = {s: {"split": s, "annotation_level": "variant"} for s in ("train", "val", "test")}
    required = ("fgvc-aircraft-2013b/data/variants.txt", "fgvc-aircraft-2013b/data/images")
    annotation_files = ("fgvc-aircraft-2013b/data/variants.txt",
                        *(f"fgvc-aircraft-2013b/data/images_variant_{s}.txt" for s in ("train", "val", "test")))

    def samples(self, dataset):
        return dataset._image_files, dataset._labels


@register_task("dtd", aliases=("vtab-dtd",))
class DTDTask(TorchvisionTask):
    """Describable Textures (Cimpoi et al. 2014): 47 classes, official partition 1 train/val/test 1,880 each."""

    folder = "dtd"
    tv_class = "DTD"
    splits = {s: {"split": s, "partition": 1} for s in ("train", "val", "test")}
    required = ("dtd/dtd/labels/train1.txt", "dtd/dtd/labels/val1.txt", "dtd/dtd/labels/test1.txt", "dtd/dtd/images")
    annotation_files = required[:3]

    def samples(self, dataset):
        return dataset._image_files, dataset._labels


@register_task("oxford-pets", aliases=("vtab-pets",))
class OxfordPetsTask(TorchvisionTask):
    """Oxford-IIIT Pet (Parkhi et al. 2012): 37 breeds, official 3,680 trainval / 3,669 test."""

    folder = "oxford-iiit-pet"
    tv_class = "OxfordIIITPet"
    splits = {"train": {"split": "trainval"}, "test": {"split": "test"}}
    required = ("oxford-iiit-pet/annotations/trainval.txt", "oxford-iiit-pet/annotations/test.txt",
                "oxford-iiit-pet/images")
    annotation_files = required[:2]

    def samples(self, dataset):
        return dataset._images, dataset._labels

    def class_names(self, dataset) -> list[str]:
        # Labels are the official 1..37 ids minus one, while torchvision's `classes` lists only the breeds
        # present in the file read; the card holds all 37 in id order.
        return list(self.card.classes)


@register_task("vtab-eurosat")
class EuroSATTask(TorchvisionTask):
    """EuroSAT RGB (Helber et al. 2019): 27,000 Sentinel-2 patches, 10 land-use classes, no official split."""

    folder = "eurosat"
    tv_class = "EuroSAT"
    splits = {"all": {}}
    required = ("eurosat/2750",)

    def samples(self, dataset):
        return [p for p, _ in dataset.samples], [t for _, t in dataset.samples]


class CLEVRTask(StandardTask):
    """CLEVR v1.0 (Johnson et al. 2017) as VTAB does: train from the official train split, test from the official
    val split (the test split has no scenes). `label_of(scene)` maps a scene's JSON to a class index."""

    folder = "clevr/CLEVR_v1.0"

    def label_of(self, scene: dict) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def fetch(self) -> None:
        import torchvision.datasets

        torchvision.datasets.CLEVRClassification(str(self.root), split="train", download=True)

    def read_parts(self) -> Parts:
        base = self.root / self.folder
        scene_files = {"train": "scenes/CLEVR_train_scenes.json", "test": "scenes/CLEVR_val_scenes.json"}
        image_dirs = {"train": "images/train", "test": "images/val"}
        self.require(*(f"{self.folder}/{p}" for p in (*scene_files.values(), *image_dirs.values())))
        parts = {}
        for split_name, scene_file in scene_files.items():
            with open(base / scene_file, encoding="utf-8") as handle:
                scenes = {s["image_filename"]: s for s in json.load(handle)["scenes"]}
            paths = list_images(base / image_dirs[split_name])
            unknown = [p.name for p in paths if p.name not in scenes]
            if unknown:
                raise DataError(f"task {self.name!r}: {len(unknown)} image(s) in {base / image_dirs[split_name]} have "
                                f"no scene in {base / scene_file} (first: {unknown[0]}); re-download CLEVR v1.0")
            parts[split_name] = part_from_files(self.root, paths, [self.label_of(scenes[p.name]) for p in paths])
        names = list(self.card.classes)
        sha = sha256_json({"scenes": hash_files([base / f for f in scene_files.values()], self.root),
                           "images": files_fingerprint([p for part in parts.values() for p in part.paths], self.root)})
        return Parts(parts, names, sha)


@register_task("vtab-clevr-count")
class CLEVRCountTask(CLEVRTask):
    """Number of objects in the scene (3..10 -> classes 0..7), as torchvision's CLEVRClassification and VTAB."""

    def label_of(self, scene: dict) -> int:
        return len(scene["objects"]) - 3


# VTAB's clevr(task="closest_object_distance"): depth of the nearest object binned by these thresholds.
CLEVR_DISTANCE_THRESHOLDS = np.array([0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0])


@register_task("vtab-clevr-dist")
class CLEVRDistanceTask(CLEVRTask):
    """Distance to the closest object: min over objects of pixel_coords[2], in 6 bins (VTAB's thresholds)."""

    def label_of(self, scene: dict) -> int:
        depth = min(obj["pixel_coords"][2] for obj in scene["objects"])
        return int(np.flatnonzero(CLEVR_DISTANCE_THRESHOLDS < depth).max())


@register_task("sun397", aliases=("vtab-sun397",))
class SUN397Task(StandardTask):
    """SUN397 (Xiao et al. 2010) with its official partition 01 (50 train / 50 test images per class), read from
    the `Partitions/` files beside torchvision's `SUN397/` folder (torchvision itself has no split)."""

    folder = "SUN397"

    def fetch(self) -> None:
        import torchvision.datasets

        torchvision.datasets.SUN397(str(self.root), download=True)

    def read_parts(self) -> Parts:
        base = self.root / self.folder
        lists = {"train": "Partitions/Training_01.txt", "test": "Partitions/Testing_01.txt"}
        self.require(f"{self.folder}/ClassName.txt", *(f"{self.folder}/{f}" for f in lists.values()))
        # ClassName.txt lines look like "/a/abbey" or "/b/bakery/shop"; torchvision's class names drop "/a/".
        names = [line.strip()[3:] for line in open(base / "ClassName.txt", encoding="utf-8") if line.strip()]
        index = {name: i for i, name in enumerate(names)}
        parts = {}
        for split_name, list_file in lists.items():
            rel = [line.strip().lstrip("/") for line in open(base / list_file, encoding="utf-8") if line.strip()]
            paths = [base / r for r in rel]
            absent = [p for p in paths if not p.is_file()]
            if absent:
                raise DataError(f"task {self.name!r}: {len(absent)} image(s) listed in {base / list_file} are missing "
                                f"(first: {absent[0]}); re-download SUN397")
            labels = [index["/".join(Path(r).parts[1:-1])] for r in rel]
            parts[split_name] = part_from_files(self.root, paths, labels)
        sha = sha256_json({"lists": hash_files([base / "ClassName.txt", *(base / f for f in lists.values())],
                                               self.root),
                           "images": files_fingerprint([p for part in parts.values() for p in part.paths], self.root)})
        return Parts(parts, names, sha)
