"""Where scikit-image keeps the sample images its `skimage.data` functions read (lfw-faces, skimage-textures).

The files are read directly (numpy / PIL) from skimage's data folder rather than through `skimage.data.*`, so a
test or user can point UNIREP_SKIMAGE_DATA_DIR at a copy, and a missing file gives unirep's one-line error."""

from __future__ import annotations

from pathlib import Path

from unirep.tasks.offline._common import env_path, package_dir

ENV_DIR = "UNIREP_SKIMAGE_DATA_DIR"


def skimage_data_dir() -> Path | None:
    package = package_dir("skimage")
    return env_path(ENV_DIR, package / "data" if package is not None else None)
