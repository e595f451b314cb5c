"""Standard datasets read from a documented folder layout under the data root: the published archives unpacked
as their authors ship them (torchvision has no class for most of these, or no split for Caltech).

Layouts (relative to UNIREP_DATA_ROOT; each card's `extra.layout` repeats its own):
    caltech101/101_ObjectCategories/<class>/image_NNNN.jpg       torchvision's Caltech101 layout
    caltech256/256_ObjectCategories/<NNN.class>/NNN_NNNN.jpg     torchvision's Caltech256 layout
    mit67/Images/<class>/<file>, mit67/TrainImages.txt, mit67/TestImages.txt
    stanford40/JPEGImages/<action>_NNN.jpg, stanford40/ImageSplits/<action>_{train,test}.txt
    CUB_200_2011/{images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, images/}
    birdsnap/{species.txt, test_images.txt, download/images/<species dir>/<file>.jpg}
    NWPU-RESISC45/<class>/<class>_NNN.jpg
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from unirep.errors import DataError
from unirep.fileio import sha256_file, sha256_json
from unirep.tasks import register_task
from unirep.tasks.base import CARDS_DIR
from unirep.tasks.standard._common import (
    Parts,
    StandardTask,
    files_fingerprint,
    hash_files,
    list_images,
    part_from_files,
    read_lines,
)

MANIFESTS_DIR = CARDS_DIR / "manifests"


class FolderTask(StandardTask):
    """Shared hashing for folder layouts: split/label files in full, images by (path, size)."""

    def folder_hash(self, parts: dict, annotation_files: list[Path]) -> str:
        return sha256_json({"annotations": hash_files(annotation_files, self.root),
                            "images": files_fingerprint([p for part in parts.values() for p in part.paths],
                                                        self.root)})

    def existing(self, paths: list[Path], listed_in: Path) -> list[Path]:
        absent = [p for p in paths if not p.is_file()]
        if absent:
            raise DataError(f"task {self.name!r}: {len(absent)} image(s) listed in {listed_in} are missing "
                            f"(first: {absent[0]}); the data under {self.root / self.folder} is incomplete")
        return paths


def class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


@register_task("caltech101", aliases=("vtab-caltech101",))
class Caltech101Task(FolderTask):
    """Caltech-101 (Fei-Fei et al. 2004), 102 folders including BACKGROUND_Google as Kornblith et al. use it,
    with the 30-train-images-per-class split published in the repository's manifest (the rest is test)."""

    folder = "caltech101/101_ObjectCategories"

    def fetch(self) -> None:
        import torchvision.datasets

        torchvision.datasets.Caltech101(str(self.root), download=True)

    def manifest_path(self) -> Path:
        return MANIFESTS_DIR / self.card.extra.get("split_manifest", "caltech101-30-per-class.json")

    def read_parts(self) -> Parts:
        (base,) = self.require(self.folder)
        manifest_path = self.manifest_path()
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
        names = [p.name for p in class_folders(base)]
        if sorted(manifest["classes"]) != names:
            raise DataError(f"task {self.name!r}: class folders under {base} differ from {manifest_path}; "
                            "the data is not the published Caltech-101 release")
        index = {name: i for i, name in enumerate(names)}
        on_disk = {p.relative_to(base).as_posix() for name in names for p in list_images(base / name)}
        parts, listed = {}, set()
        for split in ("train", "test"):
            rel = [f"{name}/image_{n:04d}.jpg" for name in names for n in manifest["classes"][name][split]]
            listed.update(rel)
            parts[split] = part_from_files(base, [base / r for r in rel], [index[r.split("/")[0]] for r in rel])
        if listed != on_disk:
            extra, absent = sorted(on_disk - listed), sorted(listed - on_disk)
            raise DataError(f"task {self.name!r}: the files under {base} differ from the split manifest "
                            f"{manifest_path} ({len(absent)} listed but missing, e.g. {absent[:2]}; {len(extra)} "
                            f"unlisted, e.g. {extra[:2]}); the data is not the published Caltech-101 release")
        sha = sha256_json({"manifest": sha256_file(manifest_path),
                           "images": files_fingerprint([p for part in parts.values() for p in part.paths], base)})
        return Parts(parts, names, sha)


@register_task("caltech256")
class Caltech256Task(FolderTask):
    """Caltech-256 (Griffin et al. 2007), 257 folders including 257.clutter: `extra.train_per_class` images per
    class for training (a seeded permutation of each class's sorted file names), the rest for test."""

    folder = "caltech256/256_ObjectCategories"

    def fetch(self) -> None:
        import torchvision.datasets

        torchvision.datasets.Caltech256(str(self.root), download=True)

    def read_parts(self) -> Parts:
        (base,) = self.require(self.folder)
        per_class = int(self.card.extra.get("train_per_class", 60))
        rng = np.random.default_rng(self.card.seed)
        folders = class_folders(base)
        train, test, train_y, test_y = [], [], [], []
        for label, folder in enumerate(folders):
            files = list_images(folder)
            if len(files) <= per_class:
                raise DataError(f"task {self.name!r}: {folder} has {len(files)} images, needs more than {per_class}; "
                                "the data is incomplete")
            order = rng.permutation(len(files))
            train += [files[i] for i in order[:per_class]]
            test += [files[i] for i in np.sort(order[per_class:])]
            train_y += [label] * per_class
            test_y += [label] * (len(files) - per_class)
        parts = {"train": part_from_files(base, train, train_y), "test": part_from_files(base, test, test_y)}
        names = [f.name.split(".", 1)[-1] for f in folders]
        return Parts(parts, names, self.folder_hash(parts, []))


@register_task("mit67")
class MIT67Task(FolderTask):
    """MIT Indoor-67 (Quattoni & Torralba 2009): official TrainImages.txt / TestImages.txt (80 / 20 per class)."""

    folder = "mit67"

    def read_parts(self) -> Parts:
        images, train_list, test_list = self.require(f"{self.folder}/Images", f"{self.folder}/TrainImages.txt",
                                                     f"{self.folder}/TestImages.txt")
        names = [p.name for p in class_folders(images)]
        index = {name: i for i, name in enumerate(names)}
        parts = {}
        for split, listing in (("train", train_list), ("test", test_list)):
            rel = read_lines(listing)
            unknown = [r for r in rel if r.split("/")[0] not in index]
            if unknown:
                raise DataError(f"task {self.name!r}: {listing} names classes without a folder in {images} "
                                f"(first: {unknown[0]})")
            paths = self.existing([images / r for r in rel], listing)
            parts[split] = part_from_files(self.root, paths, [index[r.split("/")[0]] for r in rel])
        return Parts(parts, names, self.folder_hash(parts, [train_list, test_list]))


@register_task("actions40")
class Actions40Task(FolderTask):
    """Stanford 40 Actions (Yao et al. 2011): official 100 train images per action, the rest test."""

    folder = "stanford40"

    def read_parts(self) -> Parts:
        images, splits = self.require(f"{self.folder}/JPEGImages", f"{self.folder}/ImageSplits")
        names = list(self.card.classes)
        parts, lists = {}, []
        for split in ("train", "test"):
            paths, labels = [], []
            for label, action in enumerate(names):
                listing = splits / f"{action}_{split}.txt"
                if not listing.is_file():
                    raise self.missing(listing)
                lists.append(listing)
                files = read_lines(listing)
                paths += self.existing([images / f for f in files], listing)
                labels += [label] * len(files)
            parts[split] = part_from_files(self.root, paths, labels)
        return Parts(parts, names, self.folder_hash(parts, lists))


@register_task("cub200")
class CUB200Task(FolderTask):
    """Caltech-UCSD Birds-200-2011 (Wah et al. 2011): official train_test_split.txt, 5,994 train / 5,794 test."""

    folder = "CUB_200_2011"

    def read_parts(self) -> Parts:
        files = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
        paths = self.require(*(f"{self.folder}/{f}" for f in files), f"{self.folder}/images")
        images, labels, is_train, classes = (dict(line.split(" ", 1) for line in read_lines(p)) for p in paths[:4])
        names = [classes[k].split(".", 1)[-1] for k in sorted(classes, key=int)]
        parts = {}
        for split, flag in (("train", "1"), ("test", "0")):
            ids = [i for i in sorted(images, key=int) if is_train.get(i) == flag]
            files_of = self.existing([paths[4] / images[i] for i in ids], paths[0])
            parts[split] = part_from_files(self.root, files_of, [int(labels[i]) - 1 for i in ids])
        return Parts(parts, names, self.folder_hash(parts, list(paths[:4])))


@register_task("birdsnap")
class BirdsnapTask(FolderTask):
    """Birdsnap (Berg et al. 2014), 500 species: test = the official test_images.txt, train = every other image
    present. Its images are Flickr URLs fetched by the authors' script, so what is on disk varies; the card
    takes its counts from the data (`counts_from_data`)."""

    folder = "birdsnap"

    def read_parts(self) -> Parts:
        species_file, test_file, images = self.require(f"{self.folder}/species.txt", f"{self.folder}/test_images.txt",
                                                       f"{self.folder}/download/images")
        with open(species_file, encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if not rows or "dir" not in rows[0] or "id" not in rows[0]:
            raise DataError(f"{species_file}: expected tab-separated columns id, common, scientific, dir")
        rows.sort(key=lambda r: int(r["id"]))
        names = [r["dir"] for r in rows]
        index = {name: i for i, name in enumerate(names)}
        test_rel = {line for line in read_lines(test_file) if line != "path"}
        train, test = [], []
        for name in names:
            for path in list_images(images / name) if (images / name).is_dir() else []:
                (test if path.relative_to(images).as_posix() in test_rel else train).append(path)
        if not train or not test:
            raise self.missing(images, "no train or no test image found")
        parts = {split: part_from_files(self.root, paths, [index[p.parent.name] for p in paths])
                 for split, paths in (("train", train), ("test", test))}
        return Parts(parts, names, self.folder_hash(parts, [species_file, test_file]))


@register_task("vtab-resisc45")
class RESISC45Task(FolderTask):
    """NWPU-RESISC45 (Cheng et al. 2017): 31,500 aerial images, 45 classes x 700, no official split."""

    folder = "NWPU-RESISC45"

    def read_parts(self) -> Parts:
        (base,) = self.require(self.folder)
        folders = class_folders(base)
        paths = [p for folder in folders for p in list_images(folder)]
        index = {f.name: i for i, f in enumerate(folders)}
        parts = {"all": part_from_files(self.root, paths, [index[p.parent.name] for p in paths])}
        return Parts(parts, [f.name for f in folders], self.folder_hash(parts, []))
