"""Standard datasets whose files torchvision checks by MD5 before parsing (CIFAR pickles, SVHN and Flowers-102
.mat files): torchvision downloads and verifies them; unirep parses the same files itself so that a damaged
or partial copy gets a one-line error naming the file, and so CIFAR's pickles are read with an unpickler that
admits numpy arrays only (a pickle can otherwise run arbitrary code).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from unirep.errors import DataError
from unirep.fileio import sha256_json
from unirep.tasks import register_task
from unirep.tasks.standard._common import (
    Part,
    Parts,
    StandardTask,
    files_fingerprint,
    hash_files,
    part_from_files,
)

# The only globals a CIFAR batch needs: numpy's array reconstruction (numpy 1 and 2 module names) and, for
# batches re-saved by Python 3, the bytes decoder.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles (a pure str -> bytes function)
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a dataset pickle")
        module = module.replace("numpy.core.", "numpy._core.")  # numpy 2 moved numpy.core
        return super().find_class(module, name)


def load_array_pickle(path: Path) -> dict:
    """A Python-2-era pickle of numpy arrays and lists (latin1 strings, as torchvision reads CIFAR)."""
    try:
        with open(path, "rb") as handle:
            return _ArrayOnlyUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"cannot read {path}: {exc}; it is damaged or not a CIFAR python batch, re-download it") \
            from None


class CIFARTask(StandardTask):
    """CIFAR-10/100 (Krizhevsky 2009) from the python batches: 50,000 train / 10,000 test 32x32 RGB images."""

    tv_class = ""
    train_files: tuple[str, ...] = ()
    test_files: tuple[str, ...] = ()
    meta_file = ""
    label_key = ""
    names_key = ""

    def fetch(self) -> None:
        import torchvision.datasets

        getattr(torchvision.datasets, self.tv_class)(str(self.root), train=True, download=True)

    def read_parts(self) -> Parts:
        files = [*self.train_files, *self.test_files, self.meta_file]
        paths = self.require(*(f"{self.folder}/{f}" for f in files))
        meta = load_array_pickle(paths[-1])
        names = [str(n) for n in meta[self.names_key]]
        parts = {"train": self._read_batches(self.train_files, "train"),
                 "test": self._read_batches(self.test_files, "test")}
        return Parts(parts, names, sha256_json(hash_files(paths, self.root)))

    def _read_batches(self, files: tuple[str, ...], split: str) -> Part:
        images, labels = [], []
        for name in files:
            path = self.root / self.folder / name
            batch = load_array_pickle(path)
            data = np.asarray(batch["data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise DataError(f"{path}: data has shape {data.shape}, expected (N, 3072); re-download it")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # CHW rows -> HWC, as torchvision
            labels.extend(int(v) for v in batch[self.label_key])
        arrays = np.ascontiguousarray(np.concatenate(images))
        ids = [f"{split}/{i:05d}" for i in range(len(arrays))]
        return Part(ids=ids, labels=np.asarray(labels, dtype=np.int64), arrays=arrays)


@register_task("cifar10")
class CIFAR10Task(CIFARTask):
    folder = "cifar-10-batches-py"
    tv_class = "CIFAR10"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    meta_file = "batches.meta"
    label_key = "labels"
    names_key = "label_names"


@register_task("cifar100", aliases=("vtab-cifar100",))
class CIFAR100Task(CIFARTask):
    folder = "cifar-100-python"
    tv_class = "CIFAR100"
    train_files = ("train",)
    test_files = ("test",)
    meta_file = "meta"
    label_key = "fine_labels"
    names_key = "fine_label_names"


def load_mat(path: Path, keys: tuple[str, ...]) -> dict:
    import scipy.io  # deferred: listing tasks should not pay for scipy

    try:
        content = scipy.io.loadmat(path, squeeze_me=True)
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read {path}: {exc}; re-download it") from None
    missing = [k for k in keys if k not in content]
    if missing:
        raise DataError(f"{path} has no variable(s) {missing}; it is not the published file, re-download it")
    return content


@register_task("vtab-svhn")
class SVHNTask(StandardTask):
    """SVHN cropped digits (Netzer et al. 2011), format 2: 73,257 train / 26,032 test; label 10 means digit 0."""

    folder = "svhn"

    def fetch(self) -> None:
        import torchvision.datasets

        for split in ("train", "test"):
            torchvision.datasets.SVHN(str(self.root / self.folder), split=split, download=True)

    def read_parts(self) -> Parts:
        paths = self.require(f"{self.folder}/train_32x32.mat", f"{self.folder}/test_32x32.mat")
        parts = {}
        for split, path in zip(("train", "test"), paths, strict=True):
            content = load_mat(path, ("X", "y"))
            images = np.asarray(content["X"], dtype=np.uint8)
            if images.ndim != 4 or images.shape[:3] != (32, 32, 3):
                raise DataError(f"{path}: X has shape {images.shape}, expected (32, 32, 3, N); re-download it")
            labels = np.atleast_1d(content["y"]).astype(np.int64) % 10  # SVHN stores digit 0 as 10
            arrays = np.ascontiguousarray(images.transpose(3, 0, 1, 2))
            parts[split] = Part(ids=[f"{split}/{i:05d}" for i in range(len(arrays))], labels=labels, arrays=arrays)
        return Parts(parts, [str(d) for d in range(10)], sha256_json(hash_files(paths, self.root)))


@register_task("flowers102", aliases=("vtab-flowers102",))
class Flowers102Task(StandardTask):
    """Oxford Flowers-102 (Nilsback & Zisserman 2008): official train/val/test 1,020/1,020/6,149 from setid.mat,
    labels 1..102 from imagelabels.mat, images jpg/image_NNNNN.jpg (torchvision's layout)."""

    folder = "flowers-102"

    def fetch(self) -> None:
        import torchvision.datasets

        torchvision.datasets.Flowers102(str(self.root), download=True)

    def read_parts(self) -> Parts:
        setid_path, labels_path, _ = self.require(f"{self.folder}/setid.mat", f"{self.folder}/imagelabels.mat",
                                                  f"{self.folder}/jpg")
        setid = load_mat(setid_path, ("trnid", "valid", "tstid"))
        labels = np.atleast_1d(load_mat(labels_path, ("labels",))["labels"]).astype(np.int64) - 1
        parts = {}
        for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
            image_ids = np.atleast_1d(setid[key]).astype(np.int64)
            if image_ids.min() < 1 or image_ids.max() > len(labels):
                raise DataError(f"{setid_path}: {key} refers to images outside 1..{len(labels)}; re-download it")
            paths = [self.root / self.folder / "jpg" / f"image_{i:05d}.jpg" for i in image_ids]
            absent = [p for p in paths if not p.is_file()]
            if absent:
                raise self.missing(absent[0], f"{len(absent)} image(s) of the {split} split are missing")
            parts[split] = part_from_files(self.root, paths, labels[image_ids - 1])
        names = list(self.card.classes) or [str(i) for i in range(102)]
        sha = sha256_json({"annotations": hash_files([setid_path, labels_path], self.root),
                           "images": files_fingerprint([p for part in parts.values() for p in part.paths], self.root)})
        return Parts(parts, names, sha)
