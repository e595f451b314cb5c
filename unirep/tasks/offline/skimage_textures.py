"""Patch-level texture classification from scikit-image's sample photos (brick, grass, gravel, moon surface,
immunohistochemistry tissue, Hubble deep field), all as grey so colour cannot give the class away.

Each photo's centre crop is cut into non-overlapping square patches. Neighbouring patches of one photo share
texture elements (a brick, a pebble, a star cut in two), so a random patch split would let a probe match test
patches to their training neighbours. Instead the split is spatial: horizontal bands of patch rows go to train,
val and test, with one guard row of patches between bands that belongs to no split (card `extra.bands`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from unirep.errors import ConfigError, DataError
from unirep.tasks import register_task
from unirep.tasks.base import SPLITS, ImageSet, Task, TaskCard
from unirep.tasks.offline._common import require_files, sha256_files
from unirep.tasks.offline.skimage_data import ENV_DIR, skimage_data_dir

# Class name -> the file its `skimage.data` function reads.
TEXTURE_FILES = {
    "brick": "brick.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "moon": "moon.png",
    "immunohistochemistry": "ihc.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
}


@dataclass(frozen=True)
class PatchLayout:
    """How photos become patches: `crop` px centre crop, `patch_size` px patches, patch-row `bands` per split
    as [start, stop) (rows outside every band are guards)."""

    patch_size: int
    crop: int
    bands: dict[str, tuple[int, int]]

    @classmethod
    def from_card(cls, card: TaskCard) -> PatchLayout:
        extra = card.extra
        try:
            layout = cls(int(extra["patch_size"]), int(extra["crop"]),
                         {s: (int(extra["bands"][s][0]), int(extra["bands"][s][1])) for s in SPLITS})
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigError(f"tasks/{card.name}.yaml: extra needs patch_size, crop and bands.{{train,val,test}} "
                              f"as [start, stop) patch rows ({exc!r})") from None
        layout.validate(card.name)
        return layout

    @property
    def rows(self) -> int:
        return self.crop // self.patch_size

    def validate(self, task: str) -> None:
        if self.crop % self.patch_size:
            raise ConfigError(f"tasks/{task}.yaml: crop {self.crop} is not a multiple of patch_size {self.patch_size}")
        spans = sorted(self.bands.values())
        if any(start < 0 or stop > self.rows or start >= stop for start, stop in spans) or any(
            a[1] > b[0] for a, b in zip(spans, spans[1:])
        ):
            raise ConfigError(f"tasks/{task}.yaml: bands {self.bands} must be disjoint, non-empty patch-row ranges "
                              f"within 0..{self.rows}")


@functools.cache
def read_grey(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}; reinstall it with `pip install --force-reinstall "
                        "scikit-image`") from None


def centre_crop(photo: np.ndarray, size: int, origin: Path) -> np.ndarray:
    height, width = photo.shape
    if height < size or width < size:
        raise DataError(f"{origin} is {width}x{height} px, smaller than the {size}x{size} crop the card asks for")
    top, left = (height - size) // 2, (width - size) // 2
    return photo[top : top + size, left : left + size]


def cut_patches(photo: np.ndarray, patch: int) -> np.ndarray:
    """(rows, cols, patch, patch) non-overlapping patches of a square grey photo."""
    n = photo.shape[0] // patch
    return photo.reshape(n, patch, n, patch).transpose(0, 2, 1, 3)


@register_task("skimage-textures")
class SkimageTexturesTask(Task):
    def load_examples(self) -> tuple[ImageSet, str]:
        layout = PatchLayout.from_card(self.card)
        unknown = [c for c in self.card.classes if c not in TEXTURE_FILES]
        if unknown:
            raise ConfigError(f"tasks/{self.name}.yaml: unknown texture class(es) {unknown}; known: "
                              f"{sorted(TEXTURE_FILES)}")
        names = [TEXTURE_FILES[c] for c in self.card.classes]
        folder = skimage_data_dir()
        paths = require_files(self.card, folder, names, ENV_DIR)
        images, labels, ids, bands = [], [], [], []
        for label, (name, path) in enumerate(zip(self.card.classes, paths, strict=True)):
            grid = cut_patches(centre_crop(read_grey(path), layout.crop, path), layout.patch_size)
            for split, (start, stop) in layout.bands.items():
                for row in range(start, stop):
                    images.extend(grid[row])
                    ids.extend(f"{name}/r{row:02d}c{col:02d}" for col in range(layout.rows))
                    labels.extend([label] * layout.rows)
                    bands.extend([split] * layout.rows)
        self._bands = np.asarray(bands)
        stacked = np.ascontiguousarray(np.stack(images))
        return ImageSet.from_array(stacked, np.asarray(labels, np.int64), ids, str(folder)), sha256_files(paths, folder)

    def official_split(self, examples: ImageSet) -> dict[str, np.ndarray]:
        return {split: np.flatnonzero(self._bands == split) for split in SPLITS}
