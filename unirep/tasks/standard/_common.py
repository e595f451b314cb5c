"""Shared machinery of the standard-suite adapters: where data lives, the download switch, the missing-data line,
class-name alignment with the card, and `StandardTask`, which turns an adapter's official parts into examples.

An adapter implements `read_parts()`: a dict from official split name ("train", "val", "test", or "all" when the
data has no split) to a `Part` (ids, labels, and image files or in-memory arrays), plus the data's class names.
Everything else (card class order, official split indices, dropping official splits a card does not use,
counts taken from the data, the data hash) is done here, so every adapter splits the same way.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from unirep.errors import DataError
from unirep.fileio import sha256_file, sha256_json
from unirep.runtime_env import ALLOW_DOWNLOAD, downloads_allowed
from unirep.tasks.base import SPLITS, ImageSet, Task, TaskCard

# Same variables as the offline suite: one data root for every torchvision-style layout.
ENV_DATA_ROOT = "UNIREP_DATA_ROOT"
ENV_ALLOW_DOWNLOAD = ALLOW_DOWNLOAD
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def data_root() -> Path:
    """UNIREP_DATA_ROOT, else ~/.cache/unirep/data (XDG_CACHE_HOME respected)."""
    value = os.environ.get(ENV_DATA_ROOT, "").strip()
    if value:
        return Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "unirep" / "data"


def download_allowed() -> bool:
    """Off by default (tests and CI never download); UNIREP_ALLOW_DOWNLOAD=1 or `--download` turns it on."""
    return downloads_allowed()


@dataclass
class Part:
    """One official split as read from disk: ids, integer labels into `names` (or (N, C) targets), and either
    image `paths` or uint8 `arrays` (N, H, W[, 3]) held in memory."""

    ids: list[str]
    labels: np.ndarray
    paths: list[Path] | None = None
    arrays: np.ndarray | None = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels)
        held = self.paths if self.paths is not None else self.arrays
        if held is None or len(held) != len(self.ids) or len(self.labels) != len(self.ids):
            raise DataError(f"internal: part with {len(self.ids)} ids, {len(self.labels)} labels and "
                            f"{None if held is None else len(held)} images")


@dataclass
class Parts:
    """What an adapter reads: official parts, the data's class names (in label order), and a data hash."""

    parts: dict[str, Part]
    names: Sequence[str]
    data_sha256: str


class StandardTask(Task):
    """A published dataset under the data root. Subclasses set `folder` (the layout's top folder under the root,
    used for the missing-data check) and implement `read_parts()`; `fetch()` downloads when allowed.

    Card `extra` settings read here:
        official_splits: the official parts this card uses (e.g. VTAB-1k drops an official val).
        counts_from_data: counts are derived from what is on disk (val = `val_fraction` of train), for data
            that cannot be complete (Flickr-hosted Birdsnap / NUS-WIDE images).
        num_classes: the class count when the card does not list names (they come from the data's files).
    """

    folder: str = ""

    def __init__(self, card: TaskCard, root: str | Path | None = None, download: bool | None = None):
        super().__init__(card)
        self.root = Path(root).expanduser() if root is not None else data_root()
        self.download = download_allowed() if download is None else bool(download)
        self._official: dict[str, np.ndarray] | None = None

    # --- what adapters implement -------------------------------------------------------------------------
    def read_parts(self) -> Parts:  # pragma: no cover - abstract
        raise NotImplementedError

    def fetch(self) -> None:
        """Download the data (torchvision's own downloader); adapters without one keep this."""
        raise self.missing(self.root / self.folder, "this dataset has no automatic download")

    # --- shared ------------------------------------------------------------------------------------------
    def missing(self, where: Path, why: str = "") -> DataError:
        """The one line for absent data: what, where, and the exact command or URL that provides it."""
        how = self.card.provides.replace("<root>", str(self.root))
        reason = f" ({why})" if why else ""
        return DataError(f"task {self.name!r}: data not found at {where}{reason}; {how}")

    def require(self, *relative: str) -> list[Path]:
        """Paths under the root that must exist; fetch first when downloads are allowed."""
        paths = [self.root / rel for rel in relative]
        if self.download and not all(p.exists() for p in paths):
            try:
                self.fetch()
            except DataError:
                raise
            except Exception as exc:  # torchvision's downloaders raise URLError, RuntimeError, OSError, ...
                raise self.missing(self.root / self.folder, f"download failed: {exc}") from None
        for path in paths:
            if not path.exists():
                raise self.missing(path)
        return paths

    def load_examples(self) -> tuple[ImageSet, str]:
        read = self.read_parts()
        used = self.card.extra.get("official_splits")
        parts = {k: v for k, v in read.parts.items() if used is None or k in used or k == "all"}
        if not parts:
            raise DataError(f"task {self.name!r}: none of the official splits {sorted(read.parts)} is used by "
                            f"the card (extra.official_splits = {used})")
        mapping = self._align_classes(read.names)
        ids, labels, getters, sources, official = [], [], [], [], {}
        for split_name, part in parts.items():
            start = len(ids)
            ids.extend(part.ids)
            labels.append(part.labels if part.labels.ndim == 2 else mapping[part.labels])
            getters.append(_image_getter(part))
            sources.append(_source_getter(part))
            official[split_name] = np.arange(start, len(ids))
        offsets = np.cumsum([0] + [len(p.ids) for p in parts.values()])
        examples = ImageSet(ids, np.concatenate(labels), _chain(getters, offsets), _chain(sources, offsets))
        if len(set(ids)) != len(ids):
            raise DataError(f"task {self.name!r}: duplicate example ids in the data under {self.root}")
        self._official = {k: v for k, v in official.items() if k in SPLITS} or None
        if self.card.extra.get("counts_from_data"):
            self.card = dataclasses.replace(self.card, counts=self._counts_from_data(examples.labels))
        return examples, read.data_sha256

    def official_split(self, examples: ImageSet) -> dict[str, np.ndarray] | None:
        return self._official

    def _align_classes(self, names: Sequence[str]) -> np.ndarray:
        """Index map from the data's class order to the card's; cards without names adopt the data's."""
        names = [str(n) for n in names]
        if not self.card.classes:
            expected = int(self.card.extra.get("num_classes", len(names)))
            if len(names) != expected:
                raise DataError(f"task {self.name!r}: the data under {self.root / self.folder} has {len(names)} "
                                f"classes, the card expects {expected}; re-download it")
            self.card = dataclasses.replace(self.card, classes=tuple(names))
            return np.arange(len(names))
        position = {name: i for i, name in enumerate(self.card.classes)}
        unknown = [n for n in names if n not in position]
        if unknown:
            raise DataError(f"task {self.name!r}: class(es) {unknown[:5]} in the data under {self.root / self.folder} "
                            f"are not in the card's class list; the data is not the published release")
        return np.array([position[n] for n in names], dtype=np.int64)

    def _counts_from_data(self, labels: np.ndarray) -> dict[str, int]:
        official = self._official or {}
        fraction = float(self.card.extra.get("val_fraction", 0.2))
        n_test = len(official["test"]) if "test" in official else int(round(fraction * len(labels)))
        n_trainval = len(labels) - n_test
        n_val = len(official["val"]) if "val" in official else int(round(fraction * n_trainval))
        return {"train": n_trainval - n_val, "val": n_val, "test": n_test}


def _image_getter(part: Part) -> Callable[[int], Image.Image]:
    if part.arrays is not None:
        arrays = part.arrays
        return lambda i: Image.fromarray(arrays[i])
    paths = part.paths
    return lambda i: Image.open(paths[i])


def _source_getter(part: Part) -> Callable[[int], str]:
    if part.paths is not None:
        paths = part.paths
        return lambda i: str(paths[i])
    return lambda i: part.ids[i]


def _chain(functions: list[Callable], offsets: np.ndarray) -> Callable:
    """One index space over several parts: global index -> (part, local index)."""
    def call(index: int):
        part = int(np.searchsorted(offsets, index, side="right")) - 1
        return functions[part](index - int(offsets[part]))
    return call


# --- helpers adapters share ------------------------------------------------------------------------------
def files_fingerprint(paths: Sequence[Path], root: Path) -> str:
    """Hash of (relative path, size) of every image: catches added, removed or replaced files without reading
    100k images; files whose content defines the labels or split are hashed in full by the adapters."""
    return sha256_json([[p.relative_to(root).as_posix(), p.stat().st_size] for p in paths])


def hash_files(paths: Sequence[Path], root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in paths}


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name (stray non-image files are ignored)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def part_from_files(root: Path, paths: Sequence[Path], labels: Sequence[int]) -> Part:
    """A Part whose ids are the files' paths relative to `root`."""
    return Part(ids=[p.relative_to(root).as_posix() for p in paths], labels=np.asarray(labels, dtype=np.int64),
                paths=list(paths))
