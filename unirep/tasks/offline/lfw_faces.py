"""Faces vs non-faces from scikit-image's `lfw_subset()`: 200 grey 25x25 crops from Labeled Faces in the Wild,
the first 100 faces, the next 100 background patches of the same photos."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from unirep.errors import DataError
from unirep.tasks import register_task
from unirep.tasks.base import ImageSet, Task
from unirep.tasks.offline._common import check_shape, numbered_ids, require_files, sha256_arrays
from unirep.tasks.offline.skimage_data import ENV_DIR, skimage_data_dir

FILE = "lfw_subset.npy"  # what skimage.data.lfw_subset() reads
FACES = 100


@functools.cache
def read_lfw_subset(path: Path) -> tuple[np.ndarray, str]:
    """(the float images in [0, 1] exactly as skimage.data.lfw_subset() returns them, their sha256)."""
    try:
        images = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}; reinstall scikit-image (`pip install --force-reinstall "
                        "scikit-image`)") from None
    return images, sha256_arrays(images)


@register_task("lfw-faces")
class LFWFacesTask(Task):
    def load_examples(self) -> tuple[ImageSet, str]:
        (path,) = require_files(self.card, skimage_data_dir(), [FILE], ENV_DIR)
        faces, sha = read_lfw_subset(path)
        check_shape(self.card, faces, (2 * FACES, 25, 25), path)
        images = np.clip(np.round(faces * 255.0), 0, 255).astype(np.uint8)
        labels = (np.arange(len(images)) >= FACES).astype(np.int64)  # 0 = face, 1 = non-face
        return ImageSet.from_array(images, labels, numbered_ids("", len(images), 3), str(path)), sha
