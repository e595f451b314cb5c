"""OpenOOD v1.5's benchmarks read in OpenOOD's own layout: its image lists (`benchmark_imglist/<benchmark>/*.txt`,
one `<relative image path> <integer label>` per line) and the image folders they point into (`images_classic/`,
`images_largescale/`), as OpenOOD's download script (`scripts/download/download.py`) writes them.

Layout (relative to UNIREP_DATA_ROOT): `openood/` is OpenOOD's `data/` folder (copy or symlink it):
    openood/benchmark_imglist/cifar10/{train,val,test}_cifar10.txt, test_cifar100.txt, val_tin.txt, ...
    openood/images_classic/<dataset>/...        CIFAR-10/100, TIN, MNIST, SVHN, Textures, Places365
    openood/images_largescale/<dataset>/...     ImageNet-1k (ImageNet-200's images), SSB-hard, NINCO, ...

Two adapters, both driven by the card's `extra.lists` (list file, image folder and split of each list):
    OpenOODIdTask      the ID task: official train / val / test = the ID lists; labels are the lists' integers
                       (refused when outside the card's classes)
    OpenOODOodTask     every OoD list of one benchmark as one task: each list is a "class" named after it, the
                       validation OoD list in the val split, the test OoD lists in the test split; a benchmark card
                       (tasks/ood/standard/) selects each set by that class. Refused: a list that shares images with
                       the ID test list or with another list.

Counts are the lists' line counts, read at load time (`counts_from_data`); the cards list which published numbers
were verified. The cards live in `tasks/standard/openood/` and are registered when this module is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unirep.errors import DataError
from unirep.fileio import sha256_json
from unirep.tasks import register_task
from unirep.tasks.base import CARDS_DIR, SPLITS, TaskCard, register_card
from unirep.tasks.standard._common import Part, Parts, StandardTask, files_fingerprint, hash_files

OPENOOD_CARDS_DIR = CARDS_DIR / "standard" / "openood"
MAX_LISTED_MISSING = 1  # the first missing image is named, the rest counted


@dataclass(frozen=True)
class ImageList:
    """One OpenOOD list as a card names it: `list` relative to the OpenOOD folder, its paths relative to `images`."""

    split: str
    list: str
    images: str
    name: str = ""

    @classmethod
    def from_card(cls, raw: object, card: TaskCard) -> ImageList:
        if not isinstance(raw, dict) or not {"split", "list", "images"} <= set(raw) or raw["split"] not in SPLITS:
            raise DataError(f"task card {card.name!r}: extra.lists entries are {{split: train|val|test, list: "
                            "benchmark_imglist/..., images: images_classic|images_largescale[, name: ...]}; "
                            f"got {raw!r}")
        return cls(split=str(raw["split"]), list=str(raw["list"]), images=str(raw["images"]),
                   name=str(raw.get("name", "")))


@dataclass(frozen=True)
class ListRows:
    """A parsed list: image paths (relative to the OpenOOD folder), their integer labels and line numbers."""

    source: Path
    paths: tuple[str, ...]
    labels: np.ndarray
    lines: tuple[int, ...]


def read_image_list(path: Path, images: str) -> ListRows:
    """Parse `<relative image path> <integer label>` lines (blank lines skipped); one bad line is named as file:line."""
    paths, labels, numbers = [], [], []
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line:
                continue
            fields = line.split()
            label = _integer(fields[1]) if len(fields) == 2 else None
            if label is None:
                raise DataError(f"{path}:{number}: cannot parse {line[:80]!r}: an OpenOOD image list line is "
                                "'<relative image path> <integer label>'; fix or re-download the list")
            relative = fields[0][2:] if fields[0].startswith("./") else fields[0]
            paths.append(f"{images.strip('/')}/{relative}")
            labels.append(label)
            numbers.append(number)
    return ListRows(path, tuple(paths), np.asarray(labels, dtype=np.int64), tuple(numbers))


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


class OpenOODListTask(StandardTask):
    """Shared reading of the card's OpenOOD lists: parse, check every image exists, hash lists and images."""

    folder = "openood"

    @property
    def base(self) -> Path:
        return self.root / self.folder

    def image_lists(self) -> list[ImageList]:
        return [ImageList.from_card(raw, self.card) for raw in self.card.extra.get("lists", [])]

    def read_lists(self, lists: list[ImageList]) -> list[ListRows]:
        self.require(self.folder, *(f"{self.folder}/{item.list}" for item in lists))
        rows = [read_image_list(self.base / item.list, item.images) for item in lists]
        for listed in rows:
            self.check_images_exist(listed)
        return rows

    def check_images_exist(self, listed: ListRows) -> None:
        absent = [p for p in listed.paths if not (self.base / p).is_file()]
        if absent:
            raise DataError(f"task {self.name!r}: {len(absent)} image(s) named in {listed.source} are missing under "
                            f"{self.base} (first: {self.base / absent[0]}); download that dataset with OpenOOD's "
                            "scripts/download/download.py or fix the list")

    def data_hash(self, rows: list[ListRows]) -> str:
        files = [self.base / p for listed in rows for p in listed.paths]
        return sha256_json({"lists": hash_files([listed.source for listed in rows], self.root),
                            "images": files_fingerprint(files, self.root)})

    def part(self, paths: list[str], labels: np.ndarray) -> Part:
        return Part(ids=list(paths), labels=np.asarray(labels, dtype=np.int64), paths=[self.base / p for p in paths])


@register_task("openood-cifar10-id", aliases=("openood-imagenet200-id",))
class OpenOODIdTask(OpenOODListTask):
    """The ID set of an OpenOOD v1.5 benchmark: official train / val / test are its three ID lists."""

    def read_parts(self) -> Parts:
        lists = self.image_lists()
        if sorted(item.split for item in lists) != sorted(SPLITS):
            raise DataError(f"task card {self.name!r}: extra.lists must name one train, one val and one test list")
        rows = self.read_lists(lists)
        n_classes = self.card.num_classes
        for listed in rows:
            outside = np.flatnonzero((listed.labels < 0) | (listed.labels >= n_classes))
            if outside.size:
                first = int(outside[0])
                raise DataError(f"{listed.source}:{listed.lines[first]}: label {int(listed.labels[first])} is outside "
                                f"the {n_classes} ID classes (0..{n_classes - 1}) of {self.name!r} ({outside.size} "
                                "such line(s)); this is not the ID list of the benchmark")
        parts = {item.split: self.part(list(listed.paths), listed.labels) for item, listed in zip(lists, rows,
                                                                                                  strict=True)}
        train = next(listed for item, listed in zip(lists, rows, strict=True) if item.split == "train")
        return Parts(parts, self.class_names(train), self.data_hash(rows))

    def class_names(self, train: ListRows) -> list[str]:
        """The card's names; a card without names (ImageNet-200) takes each label's folder in the train list (its
        WordNet id: ImageNet's train images lie in one folder per class) when that folder is one and the names are
        distinct, else `class-<label>`."""
        if self.card.classes:
            return list(self.card.classes)
        folders: dict[int, set[str]] = {}
        for path, label in zip(train.paths, train.labels, strict=True):
            folders.setdefault(int(label), set()).add(Path(path).parent.name)
        names = [next(iter(folders[k])) if len(folders.get(k, ())) == 1 else f"class-{k}"
                 for k in range(self.card.num_classes)]
        return names if len(set(names)) == len(names) else [f"class-{k}" for k in range(self.card.num_classes)]


@register_task("openood-cifar10-ood", aliases=("openood-imagenet200-ood",))
class OpenOODOodTask(OpenOODListTask):
    """Every OoD list of an OpenOOD v1.5 benchmark: the list's name is the class, its split the card's split."""

    def read_parts(self) -> Parts:
        lists = self.image_lists()
        names = [item.name for item in lists]
        if not all(names) or sorted(names) != sorted(self.card.classes) or len(set(names)) != len(names):
            raise DataError(f"task card {self.name!r}: every extra.lists entry needs a unique name, and the names "
                            f"must be the card's classes {list(self.card.classes)}; got {names}")
        id_test = ImageList.from_card(self.card.extra["id_test_list"], self.card)
        rows = self.read_lists(lists)
        self.require(f"{self.folder}/{id_test.list}")
        self.check_disjoint(read_image_list(self.base / id_test.list, id_test.images), lists, rows)
        parts = {}
        for split in ("val", "test"):
            chosen = [(item, listed) for item, listed in zip(lists, rows, strict=True) if item.split == split]
            paths = [p for _, listed in chosen for p in listed.paths]
            labels = np.concatenate([np.full(len(listed.paths), self.card.classes.index(item.name), dtype=np.int64)
                                     for item, listed in chosen] or [np.zeros(0, dtype=np.int64)])
            if paths:
                parts[split] = self.part(paths, labels)
        return Parts(parts, list(self.card.classes), self.data_hash(rows))

    def check_disjoint(self, id_test: ListRows, lists: list[ImageList], rows: list[ListRows]) -> None:
        """An OoD image that is also an ID test image (or in two OoD lists) would count as both: refused."""
        seen = {p: id_test.source for p in id_test.paths}
        for item, listed in zip(lists, rows, strict=True):
            shared = [p for p in listed.paths if p in seen]
            if shared:
                other = seen[shared[0]]
                what = "the ID test list" if other == id_test.source else "another OoD list"
                raise DataError(f"task {self.name!r}: OoD list {listed.source} ({item.name}) shares {len(shared)} "
                                f"image(s) with {what} {other} (first: {shared[0]}); an image is either ID or OoD, "
                                "in one list: fix the lists")
            seen.update({p: listed.source for p in listed.paths})


def register_openood_cards() -> None:
    """The cards of `tasks/standard/openood/` (kept out of `tasks/standard/`, whose folder holds the three classic
    transfer suites) become loadable by name."""
    for path in sorted(OPENOOD_CARDS_DIR.glob("*.yaml")):
        register_card(TaskCard.from_yaml(path))


register_openood_cards()
