"""Animal-MNIST silhouettes (PyPI `animal-mnist` 0.4): 10,000 28x28 grey images, 10 animals x 1000, no split.

The package ships gzip-compressed pickles and its code imports tensorflow, so unirep never imports it: the files
are located with `importlib.util.find_spec`, their sha256 is checked against the pinned release, and they are
unpickled by a restricted unpickler that can only rebuild plain numpy arrays (a pickle can run arbitrary code).
"""

from __future__ import annotations

import functools
import gzip
import io
import pickle
import zlib
from pathlib import Path

import numpy as np

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

from unirep.errors import DataError
from unirep.fileio import sha256_file, sha256_json
from unirep.tasks import register_task
from unirep.tasks.base import ImageSet, Task
from unirep.tasks.offline._common import check_shape, env_path, numbered_ids, package_dir, require_files

ENV_DIR = "UNIREP_ANIMAL_MNIST_DIR"
DATA_FILE, LABEL_FILE = "animal_data_version_3.gz", "animal_label_version_3.gz"
# sha256 of the files in animal-mnist 0.4 (the only files this adapter will unpickle).
PINNED_SHA256 = {
    DATA_FILE: "68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce",
    LABEL_FILE: "dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57",
}
# The globals a pickled ndarray needs; numpy 2 renamed numpy.core to numpy._core, older pickles name the former.
_NUMPY_ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


def default_dir() -> Path | None:
    package = package_dir("animal_mnist")
    return package / "data" / "Animal_MNIST" if package is not None else None


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild numpy arrays; anything else is refused."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        try:
            return _NUMPY_ARRAY_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}: only numpy arrays are allowed") from None


def load_numpy_pickle(path: Path) -> np.ndarray:
    """Read a gzip-compressed pickle that must hold exactly one numeric numpy array."""
    try:
        with gzip.open(path, "rb") as handle:
            obj = NumpyOnlyUnpickler(io.BytesIO(handle.read())).load()
    except (pickle.UnpicklingError, OSError, EOFError, zlib.error, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"cannot unpickle {path}: {exc}; only gzip-compressed numpy arrays are accepted") from None
    if not isinstance(obj, np.ndarray) or obj.dtype.kind not in "biuf":
        kind = type(obj).__name__ if not isinstance(obj, np.ndarray) else f"array of {obj.dtype}"
        raise DataError(f"{path} holds a {kind}, expected a numeric numpy array")
    return obj


def verify_sha256(path: Path, expected: str, provides: str) -> str:
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(
            f"{path} has sha256 {actual[:12]}..., expected {expected[:12]}... (animal-mnist 0.4); "
            f"reinstall it with `{provides}`"
        )
    return actual


@functools.cache
def read_animal_mnist(folder: Path, provides: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(images N x 28 x 28 uint8, labels int64, sha256 identifying both files) after checking the pins."""
    data_path, label_path = folder / DATA_FILE, folder / LABEL_FILE
    shas = {name: verify_sha256(folder / name, PINNED_SHA256[name], provides) for name in (DATA_FILE, LABEL_FILE)}
    images = load_numpy_pickle(data_path)
    labels = load_numpy_pickle(label_path).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{data_path} has {len(images)} images but {label_path} has {len(labels)} labels")
    return images.astype(np.uint8, copy=False), labels, sha256_json(shas)


@register_task("animal-mnist")
class AnimalMNISTTask(Task):
    def load_examples(self) -> tuple[ImageSet, str]:
        folder = env_path(ENV_DIR, default_dir())
        data_path, _ = require_files(self.card, folder, [DATA_FILE, LABEL_FILE], ENV_DIR)
        images, labels, sha = read_animal_mnist(folder, self.card.provides)
        check_shape(self.card, images, (None, 28, 28), data_path)
        return ImageSet.from_array(images, labels, numbered_ids("", len(labels)), str(data_path)), sha
