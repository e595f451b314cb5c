"""Simulated textile surfaces (PyPI `conformal-clip-data`, made with the spc4sts R package): 250x250 JPGs of
nominal weaves, weaves with a local defect, and weaves whose texture parameters shifted (global defect).

The package lays the images out as `data/textile_images/simulated/{nominal,local,global}/*.jpg`; images are read
lazily from those files, so a corrupt file surfaces as a DataError naming it when it is first used.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

from unirep.errors import DataError
from unirep.tasks import register_task
from unirep.tasks.base import ImageSet, Task
from unirep.tasks.offline._common import env_path, missing_data_error, package_dir, sha256_files

ENV_DIR = "UNIREP_TEXTILE_DIR"
# Card class name -> the package's folder for it.
CLASS_FOLDERS = {"nominal": "nominal", "local defect": "local", "global defect": "global"}


def default_dir() -> Path | None:
    package = package_dir("conformal_clip_data")
    return package / "data" / "textile_images" / "simulated" if package is not None else None


@functools.cache
def scan_folder(root: Path, folders: tuple[str, ...]) -> tuple[tuple[Path, ...], np.ndarray, str]:
    """(JPG paths in a stable order, labels = index of their folder, sha256 of all files' bytes)."""
    paths: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        files = sorted((root / folder).glob("*.jpg"))
        if not files:
            raise DataError(f"no .jpg files in {root / folder}")
        paths.extend(files)
        labels.extend([label] * len(files))
    return tuple(paths), np.asarray(labels, np.int64), sha256_files(paths, root)


@register_task("textile-defects")
class TextileDefectsTask(Task):
    def load_examples(self) -> tuple[ImageSet, str]:
        root = env_path(ENV_DIR, default_dir())
        unknown = [c for c in self.card.classes if c not in CLASS_FOLDERS]
        if unknown:
            raise DataError(f"tasks/{self.name}.yaml: unknown class(es) {unknown}; known: {sorted(CLASS_FOLDERS)}")
        folders = tuple(CLASS_FOLDERS[c] for c in self.card.classes)
        if root is None or not all((root / f).is_dir() for f in folders):
            missing = None if root is None else next(root / f for f in folders if not (root / f).is_dir())
            raise missing_data_error(self.card, missing, ENV_DIR)
        paths, labels, sha = scan_folder(root, folders)
        ids = [p.relative_to(root).as_posix() for p in paths]
        return ImageSet(ids, labels, lambda i: Image.open(paths[i]), lambda i: str(paths[i])), sha
