"""scikit-learn's bundled handwritten digits (UCI optdigits test part): 1797 images of 8x8, values 0..16."""

from __future__ import annotations

import functools

import numpy as np

from unirep.errors import DataError
from unirep.tasks import register_task
from unirep.tasks.base import ImageSet, Task
from unirep.tasks.offline._common import numbered_ids, sha256_arrays


@functools.cache
def read_digits() -> tuple[np.ndarray, np.ndarray, str]:
    """(images N x 8 x 8 uint8 scaled from 0..16 to 0..255, labels, sha256 of the original arrays)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    labels = bunch.target.astype(np.int64)
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return images, labels, sha256_arrays(bunch.images, labels)


@register_task("sklearn-digits")
class SklearnDigitsTask(Task):
    def load_examples(self) -> tuple[ImageSet, str]:
        try:
            images, labels, sha = read_digits()
        except (ImportError, OSError) as exc:
            raise DataError(f"task {self.name!r}: cannot load sklearn's digits ({exc}); "
                            f"install it with `{self.card.provides}`") from None
        ids = numbered_ids("", len(labels), 4)
        return ImageSet.from_array(images, labels, ids, "sklearn.datasets.load_digits"), sha
