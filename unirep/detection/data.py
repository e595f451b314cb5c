"""What a detection split is: images with boxes and labels, the shape torchvision's detection models take.

`DetectionSet[i]` is `(PIL RGB image, target)` like torchvision's `CocoDetection`; `image(i)` gives the same image
as a uint8 (3, H, W) tensor and `target(i)` its `{"boxes": float32 (N, 4) xyxy pixels, "labels": int64 (N,)}`.
Boxes use the pixel-edge convention (a box covering pixel columns 3..7 is x1 = 3, x2 = 8), as COCO's and
torchvision's do, so its width is x2 - x1. A set may hold images of different sizes (COCO / YOLO folders).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from unirep.errors import DataError


def make_target(boxes: np.ndarray | Sequence, labels: np.ndarray | Sequence) -> dict[str, torch.Tensor]:
    """A target dict from (N, 4) xyxy boxes and (N,) labels (N may be 0: a background image)."""
    boxes_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
    labels_t = torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1))
    if len(boxes_t) != len(labels_t):
        raise DataError(f"{len(boxes_t)} boxes but {len(labels_t)} labels")
    return {"boxes": boxes_t, "labels": labels_t}


class DetectionSet:
    """Images of one split with their boxes: a torch map-style dataset of `(PIL RGB image, target)`.

    Images come from `get_image(i)` (uint8 (H, W, 3) array) so in-memory scenes and files on disk share one
    interface; `source(i)` names where example i comes from for error messages.

    Example:
        >>> scenes = create_task("composed-scenes").split("val")
        >>> scenes.image(0).shape, scenes.target(0)["boxes"].shape  # (3, 128, 128), (N, 4)
    """

    def __init__(
        self,
        ids: Sequence[str],
        classes: Sequence[str],
        get_image: Callable[[int], np.ndarray],
        targets: Sequence[dict[str, torch.Tensor]],
        source: Callable[[int], str] | None = None,
        task: str = "",
    ):
        self.task = task  # the task's name, when the set is a task's split
        self.ids = list(ids)
        self.classes = tuple(classes)
        self._get_image = get_image
        self._targets = list(targets)
        self._source = source or (lambda i: self.ids[i])
        if len(self.ids) != len(self._targets):
            raise DataError(f"{len(self.ids)} image ids but {len(self._targets)} targets")
        for i, target in enumerate(self._targets):
            labels = target["labels"]
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(self.classes)):
                raise DataError(f"{self._source(i)}: label outside 0..{len(self.classes) - 1}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def array(self, index: int) -> np.ndarray:
        """uint8 (H, W, 3) pixels of example `index`."""
        try:
            pixels = np.asarray(self._get_image(index))
        except DataError:
            raise
        except Exception as exc:  # PIL raises many types for corrupt/truncated files
            raise DataError(f"cannot read image {self._source(index)} (example {self.ids[index]}): {exc}; "
                            "remove or replace the file") from None
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise DataError(f"image {self._source(index)} must decode to uint8 (H, W, 3), got {pixels.dtype} "
                            f"{pixels.shape}")
        return pixels

    def image(self, index: int) -> torch.Tensor:
        """uint8 (3, H, W) tensor of example `index`."""
        return torch.from_numpy(np.ascontiguousarray(self.array(index))).permute(2, 0, 1).contiguous()

    def target(self, index: int) -> dict[str, torch.Tensor]:
        """`{"boxes": float32 (N, 4) xyxy pixels, "labels": int64 (N,)}` of example `index` (copies)."""
        target = self._targets[index]
        return {"boxes": target["boxes"].clone(), "labels": target["labels"].clone()}

    @property
    def targets(self) -> list[dict[str, torch.Tensor]]:
        return [self.target(i) for i in range(len(self))]

    @property
    def labels(self) -> np.ndarray:
        """Each example's target, as a 1-D object array (what `unirep.protocols.SealedImages` reads as labels)."""
        out = np.empty(len(self), dtype=object)
        out[:] = self.targets
        return out

    def __getitem__(self, index: int) -> tuple[Image.Image, dict[str, torch.Tensor]]:
        return Image.fromarray(self.array(index)), self.target(index)

    def stored_pixels(self, indices) -> None:
        """Where feature extraction (the classification protocols' path) reads an ImageSet's pixels: refused in one
        line, since one pooled feature vector per image cannot be scored against boxes."""
        raise DataError(f"task {self.task or '?'!r} is a detection task (boxes, not one label per image): the "
                        "classification protocols cannot use it; evaluate it with --protocols detection")

    def source(self, index: int) -> str:
        return self._source(index)

    def subset(self, indices: Sequence[int] | np.ndarray) -> DetectionSet:
        indices = np.asarray(indices, dtype=np.int64)
        return DetectionSet([self.ids[i] for i in indices], self.classes, lambda i: self._get_image(int(indices[i])),
                            [self._targets[i] for i in indices], lambda i: self._source(int(indices[i])), self.task)

    def object_counts(self) -> np.ndarray:
        """Boxes per class over the whole set, (num_classes,)."""
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for target in self._targets:
            counts += np.bincount(target["labels"].numpy(), minlength=self.num_classes)
        return counts

    @classmethod
    def from_arrays(cls, images: np.ndarray, boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                    ids: Sequence[str], classes: Sequence[str], origin: str) -> DetectionSet:
        """From uint8 (N, H, W, 3) images held in memory and per-image (n_i, 4) xyxy boxes and (n_i,) labels."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise DataError(f"{origin}: images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        targets = [make_target(b, lab) for b, lab in zip(boxes, labels, strict=True)]
        return cls(ids, classes, lambda i: images[i], targets, lambda i: f"{origin}[{i}]")


def collate_detection(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """A DataLoader's collate for detection: lists of images and targets (sizes may differ), torchvision's shape."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
