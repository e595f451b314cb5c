"""A seeded, deterministic generator of detection scenes made of real data: object images of the embedded offline
suite (Fashion-MNIST items, OpenCV digits, Animal-MNIST silhouettes) pasted at random scales and positions onto
crops of real photos and textures (scikit-image's sample images), boxes known by construction.

How one scene is made (`compose_scene`; every draw from `numpy.random.default_rng([seed, split, index])`, so a
scene depends only on the seed, its split and its index, never on which scenes were made before it):
1. background: one of the card's photos, a random square crop (side between `crop_min` of the photo's shorter side
   and all of it), resized to `image_size` (PIL bilinear), flipped left-right with probability 1/2;
2. 1..`max_objects` objects: class uniform, one object image from that class's pool for the split (the pools of
   train, val and test hold disjoint source images), cropped to its mask, resized so its longer side is
   `min_size..max_size` px (log-uniform), flipped with probability 1/2, tinted a random colour (hue uniform,
   independent of the class: colour gives no class away), placed uniformly; a placement whose box overlaps an
   earlier box by IoU > `max_iou` is redrawn (up to 30 times, then the object is left out);
3. pasting: the object's mask (source pixels brighter than `mask_threshold`, resized bilinearly: soft edges) is
   the alpha, so the object is composited in, never a grey square;
4. box: the tight box of the pasted mask's pixels with alpha >= 0.5 (not of the paste rectangle), pixel-edge xyxy.
"""

from __future__ import annotations

import colorsys
import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from unirep.errors import ConfigError, DataError
from unirep.fileio import sha256_json
from unirep.tasks.offline._common import sha256_arrays, sha256_files

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
MAX_PLACEMENT_TRIES = 30


@dataclass(frozen=True)
class ObjectClass:
    """One detection class: images of label `label` (an index into the source task's card classes) of the
    registered offline task `source` (e.g. fashion-mnist label 8, "bag")."""

    name: str
    source: str
    label: int


@dataclass(frozen=True)
class SceneConfig:
    """The generator's parameters (all in the task card's `extra`)."""

    classes: tuple[ObjectClass, ...]
    backgrounds: tuple[str, ...]  # files of scikit-image's data folder
    image_size: int = 128
    min_objects: int = 1
    max_objects: int = 6
    min_size: int = 28  # longer side of a pasted object, px
    max_size: int = 64
    max_iou: float = 0.15
    mask_threshold: int = 40  # source grey level above which a pixel belongs to the object
    crop_min: float = 0.35  # smallest background crop, as a share of the photo's shorter side
    seed: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict, seed: int, counts: dict[str, int], where: str) -> SceneConfig:
        try:
            classes = tuple(ObjectClass(str(c["name"]), str(c["source"]), int(c["label"])) for c in raw["objects"])
            settings = {k: v for k, v in raw.items() if k not in ("objects", "generator")}
            config = cls(classes=classes, backgrounds=tuple(settings.pop("backgrounds")), seed=int(seed),
                         counts={s: int(counts[s]) for s in SPLIT_CODES}, **settings)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: extra needs objects [{{name, source, label}}], backgrounds and the "
                              f"generator settings of unirep.detection.compose.SceneConfig ({exc!r})") from None
        config.validate(where)
        return config

    def validate(self, where: str) -> None:
        problems = []
        if not 1 <= self.min_objects <= self.max_objects:
            problems.append(f"need 1 <= min_objects ({self.min_objects}) <= max_objects ({self.max_objects})")
        if not 4 <= self.min_size <= self.max_size <= self.image_size:
            problems.append(f"need 4 <= min_size ({self.min_size}) <= max_size ({self.max_size}) <= image_size "
                            f"({self.image_size})")
        if not 0.0 <= self.max_iou <= 1.0 or not 0.0 < self.crop_min <= 1.0:
            problems.append("max_iou must be in [0, 1] and crop_min in (0, 1]")
        if not self.classes or not self.backgrounds:
            problems.append("objects and backgrounds must not be empty")
        if problems:
            raise ConfigError(f"{where}: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # uint8 (H, W, 3)
    boxes: np.ndarray  # float32 (N, 4) xyxy pixel edges
    labels: np.ndarray  # int64 (N,)


@functools.cache
def _source_images(source: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(grey uint8 (N, h, w) images, labels, sha256 of the data) of a registered offline task."""
    from unirep.tasks import create_task  # deferred: the task registry imports every adapter

    examples, sha = create_task(source).load_examples()
    pixels = examples.stored_pixels(np.arange(len(examples)))
    if pixels is None or pixels.shape[1] != 1:
        raise DataError(f"scene objects must come from a grey, array-backed task; {source!r} is not one")
    return np.ascontiguousarray(pixels[:, 0].numpy()), np.asarray(examples.labels), sha


@functools.cache
def _background(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as exc:
        raise DataError(f"cannot read background {path}: {exc}; reinstall it with `pip install --force-reinstall "
                        "scikit-image`") from None


class SceneComposer:
    """Makes the scenes of a SceneConfig. Object pools: each class's source images, shuffled with the seed and
    cut into disjoint train / val / test pools in proportion to the split counts."""

    def __init__(self, config: SceneConfig, background_dir: Path):
        self.config = config
        self.background_paths = [Path(background_dir) / name for name in config.backgrounds]
        for path in self.background_paths:
            if not path.is_file():
                raise DataError(f"background {path} is missing; install scikit-image (`pip install scikit-image`) "
                                "or set UNIREP_SKIMAGE_DATA_DIR to a folder holding it")
        self.backgrounds = [_background(p) for p in self.background_paths]
        self.objects: list[np.ndarray] = []  # per class: grey images
        shas = {}
        for cls in config.classes:
            images, labels, sha = _source_images(cls.source)
            shas[cls.source] = sha
            chosen = np.flatnonzero(labels == cls.label)
            if len(chosen) < 3:
                raise DataError(f"class {cls.name!r}: source {cls.source!r} has {len(chosen)} images of label "
                                f"{cls.label}")
            self.objects.append(images[chosen])
        self.source_sha256 = sha256_json({"sources": shas,
                                          "backgrounds": sha256_files(self.background_paths, Path(background_dir))})
        self.pools = self._pools()

    def _pools(self) -> dict[str, list[np.ndarray]]:
        rng = np.random.default_rng([self.config.seed, 99])
        total = sum(self.config.counts.values()) or 1
        pools: dict[str, list[np.ndarray]] = {s: [] for s in SPLIT_CODES}
        for images in self.objects:
            order = rng.permutation(len(images))
            edges = np.cumsum([0] + [round(len(images) * self.config.counts.get(s, 0) / total) for s in SPLIT_CODES])
            edges[-1] = len(images)
            for k, split in enumerate(SPLIT_CODES):
                part = order[edges[k]: edges[k + 1]]
                pools[split].append(part if len(part) else order[:1])
        return pools

    def scene(self, split: str, index: int) -> Scene:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, SPLIT_CODES[split], index])
        canvas = self._background_crop(rng).astype(np.float32)
        boxes: list[list[float]] = []
        labels: list[int] = []
        for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
            label = int(rng.integers(len(cfg.classes)))
            pool = self.pools[split][label]
            grey = self.objects[label][pool[int(rng.integers(len(pool)))]]
            placed = self._paste(canvas, grey, rng, boxes)
            if placed is not None:
                boxes.append(placed)
                labels.append(label)
        image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
        return Scene(image, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64))

    def _background_crop(self, rng: np.random.Generator) -> np.ndarray:
        photo = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        height, width = photo.shape[:2]
        short = min(height, width)
        side = int(rng.integers(max(1, int(self.config.crop_min * short)), short + 1))
        top, left = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
        size = self.config.image_size
        crop = Image.fromarray(photo[top: top + side, left: left + side]).resize((size, size), Image.BILINEAR)
        pixels = np.asarray(crop)
        return pixels[:, ::-1] if rng.random() < 0.5 else pixels

    def _paste(self, canvas: np.ndarray, grey: np.ndarray, rng: np.random.Generator,
               boxes: list[list[float]]) -> list[float] | None:
        cfg = self.config
        mask = grey > cfg.mask_threshold
        if not mask.any():
            return None
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        grey = grey[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
        mask = mask[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
        longer = float(np.exp(rng.uniform(np.log(cfg.min_size), np.log(cfg.max_size))))
        scale = longer / max(grey.shape)
        out_w, out_h = max(2, round(grey.shape[1] * scale)), max(2, round(grey.shape[0] * scale))
        shade = np.asarray(Image.fromarray(grey).resize((out_w, out_h), Image.BILINEAR), np.float32) / 255.0
        alpha = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((out_w, out_h), Image.BILINEAR),
                           np.float32) / 255.0
        if rng.random() < 0.5:
            shade, alpha = shade[:, ::-1], alpha[:, ::-1]
        hue, saturation, value = rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.75, 1.0)
        colour = np.asarray(colorsys.hsv_to_rgb(hue, saturation, value), np.float32) * 255.0
        inside = alpha >= 0.5
        rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
        if not len(rows):
            return None
        size = cfg.image_size
        for _ in range(MAX_PLACEMENT_TRIES):
            top, left = int(rng.integers(size - out_h + 1)), int(rng.integers(size - out_w + 1))
            box = [float(left + cols[0]), float(top + rows[0]), float(left + cols[-1] + 1), float(top + rows[-1] + 1)]
            if all(box_iou(box, other) <= cfg.max_iou for other in boxes):
                break
        else:
            return None
        # Shading keeps the object's own texture (a sneaker's sole, a digit's stroke) under the tint.
        rgb = colour[None, None, :] * (0.35 + 0.65 * shade[:, :, None])
        a = alpha[:, :, None]
        region = canvas[top: top + out_h, left: left + out_w]
        region[...] = region * (1.0 - a) + rgb * a
        return box


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two xyxy boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def compose_split(composer: SceneComposer, split: str, count: int) -> tuple[np.ndarray, list[np.ndarray],
                                                                              list[np.ndarray]]:
    """(images uint8 (count, S, S, 3), boxes per scene, labels per scene) of scenes 0..count-1 of `split`."""
    scenes = [composer.scene(split, i) for i in range(count)]
    return (np.stack([s.image for s in scenes]), [s.boxes for s in scenes], [s.labels for s in scenes])


def scenes_sha256(images: np.ndarray, boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> str:
    """Hash of generated scenes (pixels, boxes, labels): equal hashes mean bit-identical scenes."""
    return sha256_arrays(images, np.concatenate([np.zeros((0, 4), np.float32), *boxes]),
                         np.concatenate([np.zeros(0, np.int64), *labels]),
                         np.asarray([len(b) for b in boxes], np.int64))
