"""What every detection format reader returns: one split's image files with their boxes, read into a DetectionSet
whose images are decoded from disk on demand."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from unirep.detection.data import DetectionSet, make_target
from unirep.errors import DataError


@dataclass
class SplitRecords:
    """Per image: an id, its file, (height, width), xyxy pixel boxes, labels, and where it is declared."""

    ids: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    wheres: list[str] = field(default_factory=list)

    def add(self, image_id: str, path: Path, size: tuple[int, int], boxes: np.ndarray, labels: np.ndarray,
            where: str) -> None:
        self.ids.append(image_id)
        self.paths.append(path)
        self.sizes.append(size)
        self.boxes.append(boxes)
        self.labels.append(labels)
        self.wheres.append(where)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, indices: np.ndarray) -> SplitRecords:
        out = SplitRecords()
        for i in indices:
            out.add(self.ids[i], self.paths[i], self.sizes[i], self.boxes[i], self.labels[i], self.wheres[i])
        return out

    def check_files(self) -> None:
        missing = [f"{p} ({w})" for p, w in zip(self.paths, self.wheres, strict=True) if not p.is_file()]
        if missing:
            raise DataError(f"{len(missing)} image file(s) missing, e.g. {', '.join(missing[:3])}; fix the paths "
                            "or the card's data.images folder")

    def to_set(self, classes: tuple[str, ...], task: str = "") -> DetectionSet:
        def read(index: int) -> np.ndarray:
            path = self.paths[index]
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            if pixels.shape[:2] != tuple(self.sizes[index]):
                raise DataError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]} px but {self.wheres[index]} says "
                                f"{self.sizes[index][1]}x{self.sizes[index][0]}")
            return pixels

        targets = [make_target(b, lab) for b, lab in zip(self.boxes, self.labels, strict=True)]
        return DetectionSet(self.ids, classes, read, targets, lambda i: f"{self.paths[i]} ({self.wheres[i]})", task)


def carve(records: SplitRecords, fraction: float, seed: int, salt: int) -> tuple[SplitRecords, SplitRecords]:
    """(the rest, a seeded `fraction` of the images) for a split the data does not give (at least one image)."""
    if len(records) < 2:
        raise DataError(f"cannot carve a split out of {len(records)} image(s): give the split in the data")
    order = np.random.default_rng([seed, salt]).permutation(len(records))
    n = min(len(records) - 1, max(1, round(fraction * len(records))))
    return records.subset(np.sort(order[n:])), records.subset(np.sort(order[:n]))
