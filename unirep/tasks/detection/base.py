"""What a detection task is: a card (classes, counts, generator or data settings), its three `DetectionSet`
splits and a published manifest (example ids + a hash of the data read or generated)."""

from __future__ import annotations

import abc
import functools

from unirep.detection.data import DetectionSet
from unirep.errors import DataError
from unirep.tasks.base import SPLITS, ImageSet, SplitManifest, Task


class DetectionTask(Task):
    """A task whose examples are images with boxes. Subclasses implement `load_splits`.

    Only the `detection` protocol reads one: `split(name)` gives a DetectionSet, not an ImageSet, and
    `load_examples` (the classification tasks' entry point) is refused in one line.
    """

    kind = "detection"

    @abc.abstractmethod
    def load_splits(self) -> tuple[dict[str, DetectionSet], str]:
        """The train / val / test sets and a sha256 identifying the data they hold."""

    def load_examples(self) -> tuple[ImageSet, str]:
        raise DataError(f"task {self.name!r} is a detection task (boxes, not one label per image): evaluate it "
                        "with --protocols detection")

    @functools.cached_property
    def _detection_splits(self) -> tuple[dict[str, DetectionSet], str]:
        splits, sha = self.load_splits()
        for name in SPLITS:
            splits[name].task = self.name
            want = self.card.counts.get(name)
            if want is not None and len(splits[name]) != want:
                raise DataError(f"task {self.name!r}: split {name!r} has {len(splits[name])} images, the card "
                                f"says counts.{name}: {want}")
        return splits, sha

    def split(self, name: str) -> DetectionSet:  # type: ignore[override] - a detection task's split
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return self._detection_splits[0][name]

    @functools.cached_property
    def manifest(self) -> SplitManifest:
        splits, sha = self._detection_splits
        return SplitManifest(task=self.name, seed=self.card.seed, data_sha256=sha,
                             splits={s: list(splits[s].ids) for s in SPLITS})
