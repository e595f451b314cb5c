"""Fashion-MNIST (Zalando), read through torchvision's `FashionMNIST` so offline and networked users share
one code path.

Offline, the IDX files of Debian's `dataset-fashion-mnist` (or any folder named by UNIREP_FASHION_MNIST_DIR,
`.gz` or not) are laid out where torchvision reads them, `<data root>/FashionMNIST/raw/`; an existing torchvision
root (UNIREP_DATA_ROOT) is used as is; with UNIREP_ALLOW_DOWNLOAD=1 torchvision downloads missing files itself.
The official 10k test split is kept; train/val are drawn from the official 60k train split.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from pathlib import Path

import numpy as np

from unirep.errors import DataError
from unirep.fileio import atomic_write_bytes
from unirep.tasks import register_task
from unirep.tasks.base import ImageSet, Task, TaskCard
from unirep.tasks.offline._common import (
    ENV_ALLOW_DOWNLOAD,
    ENV_DATA_ROOT,
    check_shape,
    data_root,
    download_allowed,
    env_path,
    missing_data_error,
    numbered_ids,
    sha256_arrays,
)

ENV_SOURCE_DIR = "UNIREP_FASHION_MNIST_DIR"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def torchvision_raw_dir(root: Path) -> Path:
    return root / "FashionMNIST" / "raw"


def _find_idx(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def lay_out_for_torchvision(source: Path, root: Path) -> bool:
    """Decompress/copy the IDX files in `source` into torchvision's layout under `root`; False if any is absent.

    torchvision checks for the *uncompressed* names, exactly what its own download leaves behind. Files already
    there are kept, and each write is atomic so an interrupted run never leaves a half file torchvision would trust.
    """
    raw = torchvision_raw_dir(root)
    todo = [name for name in IDX_FILES if not (raw / name).is_file()]
    sources = {name: _find_idx(source, name) for name in todo}
    if any(path is None for path in sources.values()):
        return False
    for name, path in sources.items():
        try:
            data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"cannot decompress {path}: {exc}; reinstall it with `apt-get install --reinstall "
                            "dataset-fashion-mnist`") from None
        try:
            atomic_write_bytes(raw / name, data)
        except OSError as exc:
            raise DataError(f"cannot write torchvision's layout under {raw} ({exc.strerror or exc}); "
                            f"set {ENV_DATA_ROOT} to a writable folder") from None
    return True


@functools.cache
def read_with_torchvision(root: Path, download: bool) -> tuple[np.ndarray, np.ndarray, int, str]:
    """(images N x 28 x 28 uint8, labels, number of official train examples, sha256 of the arrays) via
    torchvision.datasets. The hash is of the decoded arrays, so Debian's .gz and torchvision's download give
    the same manifest digest."""
    from torchvision.datasets import FashionMNIST  # deferred: torchvision import costs ~1 s

    try:
        train = FashionMNIST(str(root), train=True, download=download)
        test = FashionMNIST(str(root), train=False, download=download)
    except Exception as exc:  # torchvision raises RuntimeError/AssertionError/URLError for bad or absent files
        raise DataError(
            f"torchvision could not read Fashion-MNIST under {torchvision_raw_dir(root)}: {exc}; "
            "delete that folder to lay the files out again"
        ) from None
    images = np.concatenate([train.data.numpy(), test.data.numpy()])
    labels = np.concatenate([train.targets.numpy(), test.targets.numpy()]).astype(np.int64)
    return images, labels, len(train), sha256_arrays(images, labels)


@register_task("fashion-mnist")
class FashionMNISTTask(Task):
    def __init__(self, card: TaskCard):
        super().__init__(card)
        self.root = data_root()

    def _prepare(self) -> None:
        source = env_path(ENV_SOURCE_DIR, DEBIAN_DIR)
        raw = torchvision_raw_dir(self.root)
        if all((raw / name).is_file() for name in IDX_FILES):
            return
        if source is not None and source.is_dir() and lay_out_for_torchvision(source, self.root):
            return
        if not download_allowed():
            raise missing_data_error(
                self.card, source, ENV_SOURCE_DIR,
                f"or set {ENV_ALLOW_DOWNLOAD}=1 to let torchvision download it into {raw}",
            )

    def load_examples(self) -> tuple[ImageSet, str]:
        self._prepare()
        images, labels, self._n_train, sha = read_with_torchvision(self.root, download_allowed())
        origin = torchvision_raw_dir(self.root)
        check_shape(self.card, images, (None, 28, 28), origin)
        if labels.min() < 0 or labels.max() >= self.card.num_classes:
            raise DataError(f"task {self.name!r}: labels under {origin} fall outside 0..{self.card.num_classes - 1}")
        ids = numbered_ids("train/", self._n_train) + numbered_ids("test/", len(labels) - self._n_train)
        return ImageSet.from_array(images, labels, ids, str(origin)), sha

    def official_split(self, examples: ImageSet) -> dict[str, np.ndarray]:
        # Examples are the official train split followed by the official test split (load_examples).
        return {"train": np.arange(self._n_train), "test": np.arange(self._n_train, len(examples))}
