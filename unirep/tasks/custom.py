"""Custom tasks declared in a YAML card, no code: an ImageFolder tree or a CSV of (path, label[, split]).

A card (any folder; relative paths are relative to the card's folder):

    name: my-flowers                 # letters, digits, '.', '_', '-'
    description: Flowers from my garden
    metric: top1                     # or mean_per_class (default top1)
    classes: [daisy, rose, tulip]    # optional: default = folder names / labels found, sorted
    seed: 0
    data:
      format: imagefolder            # root/<class>/**/*.jpg, or root/{train,val,test}/<class>/... for a given split
      root: photos
      # format: csv                  # csv: labels.csv with header path,label[,split]; paths relative to `root`
      # csv: labels.csv              #      (default: the CSV's folder)
      val_fraction: 0.2              # used when the data gives no split (and for val when it gives train/test only)
      test_fraction: 0.2
      min_per_class: 3
      manifest: manifests/my-flowers.json   # default: <card folder>/manifests/<name>.json

When the data gives no split, unirep builds one: per class, a seeded permutation gives round(fraction * n) (at
least one) images to test and to val, the rest to train. Every load validates the inputs (missing files,
unreadable images, labels outside `classes`, unknown split names, classes with too few examples) and reports the
offending rows in one line, then writes the split manifest.

Cards are found in the folders of UNIREP_TASK_DIRS (os.pathsep-separated) or added with `add_task_card(path)`
(the CLI's --task-card).

Example:
    >>> from unirep.tasks.custom import add_task_card
    >>> name = add_task_card("my-cards/my-flowers.yaml")
    >>> task = create_task(name)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from unirep.errors import ConfigError, DataError, yaml_problem
from unirep.fileio import atomic_write_json, sha256_file, sha256_json
from unirep.registry import Registry
from unirep.tasks import TASKS, _import_adapters
from unirep.tasks.base import SPLITS, ImageSet, SplitManifest, Task, TaskCard, register_card
from unirep.tasks.card_fields import LABEL_METRICS, Row, checked_card_fields, read_csv_rows

ENV_TASK_DIRS = "UNIREP_TASK_DIRS"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
CARD_KEYS = {"name", "description", "classes", "metric", "seed", "source", "licence", "split", "suites", "provides",
             "data"}
DATA_KEYS = {"format", "root", "csv", "val_fraction", "test_fraction", "min_per_class", "manifest"}
MAX_LISTED = 5  # offending rows named in one error line


FORMATS: Registry = Registry("custom task format")


@FORMATS.register("imagefolder")
def read_imagefolder(data: dict) -> list[Row]:
    """root/<class>/**/<image>, or root/{train,val,test}/<class>/**/<image> when the top folders are split names."""
    root = Path(data["root"])
    if not root.is_dir():
        raise DataError(f"ImageFolder root {root} does not exist; fix data.root in the task card")
    top = sorted(p for p in root.iterdir() if p.is_dir())
    if top and {p.name for p in top} <= set(SPLITS) and "train" in {p.name for p in top}:
        return [row for split_dir in top for row in _class_tree(split_dir, split_dir.name)]
    return _class_tree(root, None)


def _class_tree(folder: Path, split: str | None) -> list[Row]:
    rows = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        rows += [Row(f, class_dir.name, split, str(f)) for f in files]
    if not rows:
        raise DataError(f"no images found under {folder}/<class>/ (extensions {', '.join(IMAGE_SUFFIXES)})")
    return rows


FORMATS.add("csv", read_csv_rows)  # header path,label[,split]; the reader audio CSV cards share (card_fields)


# --- cards ---------------------------------------------------------------------------------------------------
def read_custom_card(path: str | Path) -> TaskCard:
    """Parse and check a custom task card; relative data paths are resolved against the card's folder."""
    path = Path(path).expanduser().resolve()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"task card {path} is not valid YAML ({yaml_problem(exc)}): fix the file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read task card {path}: {exc.strerror or exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"task card {path}: expected a mapping with name, description, data")
    if isinstance(raw.get("data"), dict) and raw["data"].get("format") in ("audiofolder", "audio-csv"):
        from unirep.tasks.audio.custom import read_audio_card  # clips, not images: a card with front-end settings

        return read_audio_card(path, raw)
    if isinstance(raw.get("data"), dict) and raw["data"].get("format") in ("coco", "yolo", "ultralytics"):
        from unirep.detection.formats import read_detection_card  # boxes, not one label per image

        return read_detection_card(path, raw)
    name, metric, classes = checked_card_fields(path, raw, CARD_KEYS, default_metric="top1", metrics=LABEL_METRICS)
    data = _data_section(raw.get("data"), path, name)
    return TaskCard(
        name=name,
        description=str(raw.get("description", "")),
        classes=classes,
        metric=metric,
        counts={},  # known once the data is read (CustomTask fills them)
        source=str(raw.get("source", str(data.get("csv") or data.get("root")))),
        licence=str(raw.get("licence", "")),
        split=str(raw.get("split", "given by the data, else per class: seeded permutation, val/test fractions")),
        suites=tuple(raw.get("suites") or ()),
        seed=int(raw.get("seed", 0)),
        provides=str(raw.get("provides", f"the files named in {path}")),
        extra={"data": data, "card_path": str(path)},
    )


def _data_section(data, path: Path, name: str) -> dict:
    if not isinstance(data, dict):
        raise ConfigError(f"task card {path}: a `data:` section with format (imagefolder or csv) is required")
    unknown = sorted(set(data) - DATA_KEYS)
    if unknown:
        raise ConfigError(f"task card {path}: unknown data field(s) {unknown}; allowed: {sorted(DATA_KEYS)}")
    fmt = str(data.get("format", ""))
    if fmt not in FORMATS:
        raise ConfigError(f"task card {path}: data.format must be one of {FORMATS.list()}, got {fmt!r}")
    needed = "csv" if fmt == "csv" else "root"
    if not data.get(needed):
        raise ConfigError(f"task card {path}: data.{needed} is required for format {fmt}")
    out = dict(data)
    for key in ("root", "csv", "manifest"):
        if out.get(key):
            out[key] = str((path.parent / Path(str(out[key])).expanduser()).resolve())
    out.setdefault("manifest", str(path.parent / "manifests" / f"{name}.json"))
    for key, default in (("val_fraction", 0.2), ("test_fraction", 0.2)):
        value = float(out.get(key, default))
        if not 0 < value < 1:
            raise ConfigError(f"task card {path}: data.{key} must be between 0 and 1, got {value}")
        out[key] = value
    if out["val_fraction"] + out["test_fraction"] >= 1:
        raise ConfigError(f"task card {path}: data.val_fraction + data.test_fraction must be below 1")
    out["min_per_class"] = int(out.get("min_per_class", 3))
    if out["min_per_class"] < 3:
        raise ConfigError(f"task card {path}: data.min_per_class must be at least 3 (one image per split)")
    return out


def add_task_card(path: str | Path) -> str:
    """Register the custom task declared in `path` (idempotent for the same file); returns its name."""
    card = read_custom_card(path)
    _import_adapters()  # the built-in tasks first, so a custom name can never shadow one
    if card.name in TASKS:
        existing = _CARD_FILES.get(card.name)
        if existing == card.extra["card_path"]:
            register_card(card)  # re-read: the file may have changed
            return card.name
        where = existing or "unirep's built-in tasks"
        raise ConfigError(f"task card {path}: name {card.name!r} is already taken by {where}; rename the task")
    register_card(card)
    if card.extra.get("kind") == "audio":
        from unirep.tasks.audio.custom import CustomAudioTask

        TASKS.add(card.name, CustomAudioTask)
    elif card.extra.get("kind") == "detection":
        from unirep.detection.formats import DetectionCardTask

        TASKS.add(card.name, DetectionCardTask)
    else:
        TASKS.add(card.name, CustomTask)
    _CARD_FILES[card.name] = card.extra["card_path"]
    return card.name


def add_task_dirs(folders: list[str | Path] | None = None) -> list[str]:
    """Register every *.yaml / *.yml card in `folders` (default: UNIREP_TASK_DIRS)."""
    if folders is None:
        folders = [f for f in os.environ.get(ENV_TASK_DIRS, "").split(os.pathsep) if f.strip()]
    names = []
    for folder in map(Path, folders):
        if not folder.expanduser().is_dir():
            raise ConfigError(f"{ENV_TASK_DIRS} names {folder}, which is not a folder")
        cards = sorted([*folder.expanduser().glob("*.yaml"), *folder.expanduser().glob("*.yml")])
        names += [add_task_card(card) for card in cards]
    return names


_CARD_FILES: dict[str, str] = {}


# --- the task ------------------------------------------------------------------------------------------------
class CustomTask(Task):
    """A task declared by a custom card: validated examples, the given or a built split, a written manifest."""

    def load_examples(self) -> tuple[ImageSet, str]:
        data = self.card.extra["data"]
        rows = FORMATS.get(data["format"])(data)
        classes = self._check_labels(rows)
        _check_files(rows)
        digests = _check_images(rows)
        labels = np.array([classes.index(r.label) for r in rows], dtype=np.int64)
        base = Path(data.get("root") or Path(data.get("csv", "")).parent)
        ids = [_relative_id(r.path, base) for r in rows]
        seen: dict[str, str] = {}
        repeated = [f"{r.where} repeats {seen[i]}" for r, i in zip(rows, ids, strict=True)
                    if seen.setdefault(i, r.where) != r.where]
        if repeated:
            raise DataError(f"task {self.name!r}: {len(repeated)} image(s) listed more than once "
                            f"({'; '.join(repeated[:MAX_LISTED])}); list each image once")
        self._indices = self._build_split(rows, labels, classes)
        counts = {s: len(self._indices[s]) for s in SPLITS}
        self.card = dataclasses.replace(self.card, classes=tuple(classes), counts=counts)
        data_sha = sha256_json({"ids": ids, "labels": labels.tolist(), "images": digests,
                                "given_split": [r.split for r in rows]})
        paths = [r.path for r in rows]
        examples = ImageSet(ids, labels, lambda i: open_image(paths[i], rows[i].where), lambda i: rows[i].where)
        self._write_manifest(ids, data_sha)
        return examples, data_sha

    def official_split(self, examples: ImageSet) -> dict[str, np.ndarray]:
        return self._indices

    def _check_labels(self, rows: list[Row]) -> list[str]:
        if not self.card.classes:
            return sorted({r.label for r in rows})
        allowed = set(self.card.classes)
        bad = [r for r in rows if r.label not in allowed]
        if bad:
            shown = "; ".join(f"{r.where}: {r.label!r}" for r in bad[:MAX_LISTED])
            raise DataError(f"task {self.name!r}: {len(bad)} label(s) outside the card's classes "
                            f"{list(self.card.classes)} ({shown}); add them to `classes` or fix the rows")
        return list(self.card.classes)

    def _build_split(self, rows: list[Row], labels: np.ndarray, classes: list[str]) -> dict[str, np.ndarray]:
        data = self.card.extra["data"]
        given = [r.split for r in rows]
        bad = [r for r in rows if r.split is not None and r.split not in SPLITS]
        if bad or (any(given) and not all(given)):
            bad = bad or [r for r in rows if r.split is None]
            shown = "; ".join(f"{r.where}: {r.split!r}" for r in bad[:MAX_LISTED])
            raise DataError(f"task {self.name!r}: split must be one of {list(SPLITS)} on every row or on none "
                            f"({len(bad)} offending: {shown})")
        rng = np.random.default_rng(self.card.seed)
        if not any(given):
            self._check_class_sizes(labels, classes, np.arange(len(rows)), "", data["min_per_class"])
            return _per_class_split(labels, np.arange(len(rows)), data["test_fraction"], data["val_fraction"], rng)
        split_of = np.array(given)
        if "train" not in split_of or "test" not in split_of:
            raise DataError(f"task {self.name!r}: a given split needs train and test rows (found {sorted(set(given))})")
        indices = {s: np.flatnonzero(split_of == s) for s in SPLITS}
        if len(indices["val"]) == 0:  # carve val out of the given train, per class
            self._check_class_sizes(labels, classes, indices["train"], " in the train split", 2)
            carved = _per_class_split(labels, indices["train"], 0.0, data["val_fraction"], rng)
            indices["train"], indices["val"] = carved["train"], carved["val"]
        for split, idx in indices.items():
            absent = sorted(set(range(len(classes))) - set(labels[idx].tolist()))
            if absent:
                names = [classes[a] for a in absent[:MAX_LISTED]]
                raise DataError(f"task {self.name!r}: the given {split} split has no example of class(es) {names}; "
                                "every class needs examples in train, val and test")
        return indices

    def _check_class_sizes(self, labels, classes, pool, where: str, minimum: int) -> None:
        counts = np.bincount(labels[pool], minlength=len(classes))
        small = [f"{classes[c]} ({counts[c]})" for c in np.flatnonzero(counts < minimum)]
        if small:
            raise DataError(f"task {self.name!r}: class(es) with fewer than {minimum} examples{where}: "
                            f"{', '.join(small[:MAX_LISTED])}{' ...' if len(small) > MAX_LISTED else ''}; add "
                            "images, drop the class, or lower data.min_per_class")

    def _write_manifest(self, ids: list[str], data_sha: str) -> None:
        manifest = SplitManifest(task=self.name, seed=self.card.seed, data_sha256=data_sha,
                                 splits={s: [ids[i] for i in np.sort(self._indices[s])] for s in SPLITS})
        path = Path(self.card.extra["data"]["manifest"])
        content = manifest.to_dict()
        try:
            if path.is_file() and path.read_text(encoding="utf-8") and _same_json(path, content):
                return
            atomic_write_json(path, content)
        except OSError as exc:
            raise DataError(f"task {self.name!r}: cannot write the split manifest {path} ({exc.strerror or exc}); "
                            "set data.manifest to a writable path") from None


def _same_json(path: Path, content: dict) -> bool:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8")) == json.loads(json.dumps(content))
    except ValueError:
        return False


def _per_class_split(labels: np.ndarray, pool: np.ndarray, test_fraction: float, val_fraction: float,
                     rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per class (in label order): a seeded permutation; round(fraction * n) examples (at least one when the
    fraction is positive) to test, then to val, the rest to train. Classes stay balanced across splits even
    when they have only three examples, which a global stratified draw cannot promise."""
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for c in np.unique(labels[pool]):
        members = rng.permutation(pool[labels[pool] == c])
        n = len(members)
        n_test = max(1, int(round(test_fraction * n))) if test_fraction > 0 else 0
        n_val = max(1, int(round(val_fraction * n))) if val_fraction > 0 else 0
        while n_test + n_val > n - 1:  # keep one training example (class sizes were checked beforehand)
            if n_test >= n_val:
                n_test -= 1
            else:
                n_val -= 1
        out["test"] += members[:n_test].tolist()
        out["val"] += members[n_test:n_test + n_val].tolist()
        out["train"] += members[n_test + n_val:].tolist()
    return {s: np.sort(np.asarray(v, dtype=np.int64)) for s, v in out.items()}


def _check_files(rows: list[Row]) -> None:
    missing = [r for r in rows if not r.path.is_file()]
    if missing:
        shown = "; ".join(f"{r.where}: {r.path}" for r in missing[:MAX_LISTED])
        raise DataError(f"{len(missing)} image file(s) not found ({shown}); fix the paths or remove the rows")


def _check_images(rows: list[Row]) -> list[str]:
    """Decode every image once (cheaply: JPEGs in draft mode) so a corrupt file fails here, naming its row,
    rather than in the middle of feature extraction; returns each file's sha256 for the data hash."""
    bad, digests = [], []
    for row in rows:
        try:
            with Image.open(row.path) as image:
                image.draft("RGB", (64, 64))
                image.load()
                eight_bit(image, row.where)
        except DataError as exc:
            bad.append(str(exc))
            continue
        except Exception as exc:  # PIL raises many types for corrupt or truncated files
            bad.append(f"{row.where}: {exc}")
            continue
        digests.append(sha256_file(row.path))
    if bad:
        raise DataError(f"{len(bad)} unreadable image(s) ({'; '.join(bad[:MAX_LISTED])}); replace or remove them")
    return digests


# Integer greys that PIL's RGB conversion clips at 255 instead of scaling: a 16-bit PNG would read as mostly white.
WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def open_image(path: Path, where: str) -> Image.Image:
    """The image at `path` with pixels RGB conversion reads right (16-bit greys scaled to 8 bits)."""
    return eight_bit(Image.open(path), where)


def eight_bit(image: Image.Image, where: str) -> Image.Image:
    """`image` itself, or its 16-bit grey scaled to 8 bits (65535 -> 255, rounded); DataError for a mode without
    a defined pixel range (float, or integers beyond 16 bits)."""
    if image.mode == "F":
        raise DataError(f"{where}: unsupported image mode F (32-bit float, no defined pixel range); save it as an 8- "
                        "or 16-bit image")
    if image.mode not in WIDE_GREY_MODES:
        return image
    pixels = np.asarray(image)
    if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
        raise DataError(f"{where}: unsupported image mode {image.mode} with values beyond 16 bits "
                        f"({pixels.min()}..{pixels.max()}); save it as an 8- or 16-bit image")
    return Image.fromarray(np.round(pixels / 257.0).astype(np.uint8))  # (H, W) uint8: mode L


def _relative_id(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


add_task_dirs()
