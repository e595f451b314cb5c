"""What a target task is: a card (classes, metric, split table, counts), its examples, and a deterministic,
published train/val/test split written as a manifest (example ids + data hash).

Adapters implement `load_examples()` (all examples with stable ids) and, when the data has an official
split, `official_split()`; everything else (seeded stratified splitting, subsetting to the card's counts,
manifest hashing, validation) is shared here so every task splits the same way.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from unirep.errors import DataError
from unirep.fileio import sha256_json
from unirep.resources import TASKS_DIR

SPLITS = ("train", "val", "test")
CARDS_DIR = TASKS_DIR  # the checkout's tasks/, shipped inside the wheel (unirep.resources)


@dataclass(frozen=True)
class TaskCard:
    """The published description of a task, read from `tasks/<name>.yaml`.

    `counts` is the split table: examples per split after splitting (asserted by each task's test).
    `metric` names a `unirep.metrics.Metric` value (e.g. "top1", "mean_per_class").
    """

    name: str
    description: str
    classes: tuple[str, ...]
    metric: str
    counts: dict[str, int]
    source: str = ""
    licence: str = ""
    split: str = ""  # how the split is made, in words
    suites: tuple[str, ...] = ()
    seed: int = 0
    multilabel: bool = False
    provides: str = ""  # the package or command that provides the data (shown when it is missing)
    extra: dict = field(default_factory=dict)  # adapter-specific settings (e.g. image size, subset sizes)

    @property
    def num_classes(self) -> int:
        # Cards whose class names come from the data's own files (e.g. Stanford Cars' devkit) state only
        # `extra.num_classes` until the data is read; the adapter then fills `classes`.
        return len(self.classes) or int(self.extra.get("num_classes", 0))

    @classmethod
    def from_yaml(cls, path: str | Path) -> TaskCard:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise DataError(f"task card {path}: unknown field(s) {unknown}; allowed: {sorted(known)}")
        raw["classes"] = tuple(str(c) for c in raw["classes"])
        raw["suites"] = tuple(raw.get("suites", ()))
        raw["counts"] = {k: int(v) for k, v in raw["counts"].items()}
        return cls(**raw)

    def to_dict(self) -> dict:
        return asdict(self)


# Folders under tasks/ that also hold cards (the standard suites live in tasks/standard/).
CARD_SUBDIRS = ("", "standard")
# Cards registered in code rather than found under tasks/ (custom YAML cards from other folders).
_REGISTERED_CARDS: dict[str, TaskCard] = {}


def register_card(card: TaskCard) -> None:
    """Make `load_card(card.name)` return `card` (used for custom task cards that live outside tasks/)."""
    _REGISTERED_CARDS[card.name] = card


def load_card(name: str, cards_dir: Path | None = None) -> TaskCard:
    if cards_dir is None and name in _REGISTERED_CARDS:
        return _REGISTERED_CARDS[name]
    dirs = [Path(cards_dir)] if cards_dir is not None else [CARDS_DIR / sub for sub in CARD_SUBDIRS]
    for folder in dirs:
        path = folder / f"{name}.yaml"
        if path.exists():
            return TaskCard.from_yaml(path)
    raise DataError(f"task card {dirs[0] / f'{name}.yaml'} is missing: every registered task needs a card "
                    "under tasks/")


class ImageSet:
    """Labelled images of one split, indexable as `(PIL RGB image, label)`: a torch map-style dataset.

    Images come from `get_image(i)`, so in-memory arrays and files on disk share one interface.
    `source(i)` names where example i comes from (file path or package + index) for error messages.
    Sets built `from_array` also hand out whole batches of their stored pixels (`stored_pixels`), which
    feature extraction uses instead of one PIL image per example.
    `whole_image`: resize these images whole for a backbone, without its centre crop (spectrograms, whose edges
    are signal); subsets and the sealed test split keep it.
    """

    whole_image: bool = False

    def __init__(
        self,
        ids: Sequence[str],
        labels: np.ndarray,
        get_image: Callable[[int], Image.Image],
        source: Callable[[int], str] | None = None,
    ):
        self.ids = list(ids)
        self.labels = np.asarray(labels)
        if len(self.ids) != len(self.labels):
            raise DataError(f"{len(self.ids)} ids but {len(self.labels)} labels")
        self._get_image = get_image
        self._source = source or (lambda i: self.ids[i])
        self._pixels: np.ndarray | None = None  # uint8 (N, H, W) or (N, H, W, 3) when array-backed
        self._rows: np.ndarray | None = None  # example i is _pixels[_rows[i]] (None: the identity)

    def stored_pixels(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor | None:
        """uint8 (B, C, H, W) pixels of these examples straight from the backing array, C = 1 for grey and 3 for
        RGB; None when the set is not array-backed. The same pixels as `self[i]` (its RGB conversion of a grey
        image repeats the one channel three times, which callers do after resizing, a third of the work)."""
        if self._pixels is None:
            return None
        rows = np.asarray(indices, dtype=np.int64)
        batch = torch.from_numpy(self._pixels[rows if self._rows is None else self._rows[rows]])
        return batch[:, None] if batch.ndim == 3 else batch.permute(0, 3, 1, 2)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        try:
            image = self._get_image(index)
            image.load()
        except DataError:
            raise
        except Exception as exc:  # PIL raises many types for corrupt/truncated files
            raise DataError(
                f"cannot read image {self._source(index)} (example {self.ids[index]}): {exc}; "
                "remove or replace the file"
            ) from None
        return image.convert("RGB"), int(self.labels[index]) if self.labels.ndim == 1 else self.labels[index]

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSet:
        indices = np.asarray(indices, dtype=np.int64)
        subset = ImageSet(
            [self.ids[i] for i in indices],
            self.labels[indices],
            lambda i: self._get_image(int(indices[i])),
            lambda i: self._source(int(indices[i])),
        )
        if self._pixels is not None:
            subset._pixels, subset._rows = self._pixels, indices if self._rows is None else self._rows[indices]
        subset.whole_image = self.whole_image
        return subset

    @classmethod
    def from_array(cls, images: np.ndarray, labels: np.ndarray, ids: Sequence[str], origin: str) -> ImageSet:
        """From uint8 arrays (N,H,W) grey or (N,H,W,3) RGB held in memory."""
        if images.dtype != np.uint8:
            raise DataError(f"{origin}: images must be uint8, got {images.dtype}")
        if not (images.ndim == 3 or (images.ndim == 4 and images.shape[3] == 3)):
            raise DataError(f"{origin}: images must be (N, H, W) grey or (N, H, W, 3) RGB, got shape {images.shape}")
        image_set = cls(ids, labels, lambda i: Image.fromarray(images[i]), lambda i: f"{origin}[{i}]")
        image_set._pixels = images
        return image_set


@dataclass(frozen=True)
class SplitManifest:
    """The exact examples of each split, plus a hash of the data they were read from.

    Published under `tasks/manifests/<task>.json`; `digest` goes into every cache key and result record.
    """

    task: str
    seed: int
    data_sha256: str
    splits: dict[str, list[str]]

    @property
    def counts(self) -> dict[str, int]:
        return {name: len(ids) for name, ids in self.splits.items()}

    @functools.cached_property
    def digest(self) -> str:
        return sha256_json({"task": self.task, "seed": self.seed, "data": self.data_sha256, "splits": self.splits})

    def to_dict(self) -> dict:
        return {"task": self.task, "seed": self.seed, "data_sha256": self.data_sha256, "counts": self.counts,
                "digest": self.digest, "splits": self.splits}

    def summary(self) -> dict:
        """What a result record stores: enough to check a split without the full id lists."""
        return {"task": self.task, "seed": self.seed, "data_sha256": self.data_sha256, "counts": self.counts,
                "digest": self.digest}


class Task(abc.ABC):
    """A target task. Subclasses set `name` via the registry and implement `load_examples`.

    The split is: the official test split when the data has one (`official_split`), else a seeded stratified
    split of all examples; then each split is subsampled (stratified, seeded) to the card's `counts`.
    """

    def __init__(self, card: TaskCard):
        self.card = card

    @property
    def name(self) -> str:
        return self.card.name

    @abc.abstractmethod
    def load_examples(self) -> tuple[ImageSet, str]:
        """All examples and a sha256 identifying the data read (e.g. of the source files)."""

    def official_split(self, examples: ImageSet) -> dict[str, np.ndarray] | None:
        """Indices of official splits (e.g. {"train": ..., "test": ...}) or None when the data has none."""
        return None

    @functools.cached_property
    def _loaded(self) -> tuple[ImageSet, str, dict[str, np.ndarray]]:
        examples, data_sha = self.load_examples()
        indices = make_split(examples.labels, self.card, self.official_split(examples))
        return examples, data_sha, indices

    def split(self, name: str) -> ImageSet:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        examples, _, indices = self._loaded
        return examples.subset(indices[name])

    @functools.cached_property
    def manifest(self) -> SplitManifest:
        examples, data_sha, indices = self._loaded
        return SplitManifest(
            task=self.name,
            seed=self.card.seed,
            data_sha256=data_sha,
            splits={s: [examples.ids[i] for i in indices[s]] for s in SPLITS},
        )


def stratified_take(labels: np.ndarray, pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` indices from `pool`, class proportions kept (largest remainders), chosen with `rng`."""
    if n > len(pool):
        raise DataError(f"asked for {n} examples but only {len(pool)} are available")
    if n == len(pool):
        return np.sort(pool)
    pool_labels = labels[pool]
    classes, counts = np.unique(pool_labels, return_counts=True)
    exact = counts * n / len(pool)
    take = np.floor(exact).astype(int)
    remainder_order = np.argsort(-(exact - take), kind="stable")
    take[remainder_order[: n - take.sum()]] += 1
    chosen = [rng.permutation(pool[pool_labels == c])[:k] for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(chosen))


def make_split(labels: np.ndarray, card: TaskCard, official: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Deterministic split to the card's counts: official test kept, val carved out of train, stratified."""
    if labels.ndim == 2:
        return make_multilabel_split(labels, card, official)
    if labels.ndim != 1:
        raise DataError(f"{card.name}: labels must be (N,) class indices or (N, C) multi-label targets")
    rng = np.random.default_rng(card.seed)
    want = {s: card.counts[s] for s in SPLITS}
    everything = np.arange(len(labels))
    if official and "test" in official:
        test = stratified_take(labels, np.asarray(official["test"]), want["test"], rng)
        rest = np.asarray(official.get("train", np.setdiff1d(everything, official["test"])))
    else:
        test = stratified_take(labels, everything, want["test"], rng)
        rest = np.setdiff1d(everything, test)
    if official and "val" in official:
        val = stratified_take(labels, np.asarray(official["val"]), want["val"], rng)
    else:
        val = stratified_take(labels, rest, want["val"], rng)
        rest = np.setdiff1d(rest, val)
    train = stratified_take(labels, rest, want["train"], rng)
    splits = {"train": train, "val": val, "test": test}
    if not card.extra.get("every_class_in_every_split", True):
        return splits  # e.g. VTAB-1k SUN397: 397 classes cannot all appear in 200 val images
    present = set(np.unique(labels).tolist())
    for name, idx in splits.items():
        missing = sorted(present - set(np.unique(labels[idx]).tolist()))
        if missing:
            names = [card.classes[m] for m in missing[:5]]
            raise DataError(
                f"task {card.name!r}: split {name!r} has no example of class(es) {names} after splitting; "
                f"raise counts.{name} in tasks/{card.name}.yaml"
            )
    return splits


def make_multilabel_split(
    targets: np.ndarray, card: TaskCard, official: dict[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    """The split of multi-label (N, C) targets (1 positive, 0 negative, -1 ignored): the same rule as
    `make_split` (official test kept, val carved out of train) with seeded random subsets, since
    stratifying on label sets is ill-defined. Every class with a positive must keep one in every split."""
    rng = np.random.default_rng(card.seed)
    want = {s: card.counts[s] for s in SPLITS}
    everything = np.arange(len(targets))

    def take(pool: np.ndarray, n: int) -> np.ndarray:
        if n > len(pool):
            raise DataError(f"task {card.name!r}: asked for {n} examples but only {len(pool)} are available")
        return np.sort(rng.permutation(pool)[:n])

    official = official or {}
    test = take(np.asarray(official["test"]) if "test" in official else everything, want["test"])
    rest = np.asarray(official["train"]) if "train" in official else np.setdiff1d(everything, test)
    if "val" in official:
        val = take(np.asarray(official["val"]), want["val"])
    else:
        val = take(rest, want["val"])
        rest = np.setdiff1d(rest, val)
    splits = {"train": take(rest, want["train"]), "val": val, "test": test}
    present = (targets == 1).any(axis=0)
    for name, idx in splits.items():
        missing = np.flatnonzero(present & ~(targets[idx] == 1).any(axis=0))
        if len(missing):
            names = [card.classes[m] if m < len(card.classes) else str(m) for m in missing[:5]]
            raise DataError(f"task {card.name!r}: split {name!r} has no positive of class(es) {names}; "
                            f"raise counts.{name} in the task card")
    return splits
