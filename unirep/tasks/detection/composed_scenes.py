"""The offline detection task: scenes composed by `unirep.detection.compose` from real object images (Fashion-MNIST,
OpenCV digits, Animal-MNIST) on real photos and textures (scikit-image), every parameter in the card's `extra`.

Scenes are regenerated from the seed bit-exactly (tests/detection check the published data hash); a generated
split is kept on disk (`<data root>/composed-scenes/<key>-<split>-<count>.npz`, atomic; the key hashes the
generator's settings, so delete the folder after changing the source packages) so later runs skip the generation.
"""

from __future__ import annotations

import functools

import numpy as np

from unirep.detection.compose import SceneComposer, SceneConfig, compose_split, scenes_sha256
from unirep.detection.data import DetectionSet
from unirep.errors import DataError
from unirep.fileio import atomic_save_npz, sha256_json
from unirep.tasks import register_task
from unirep.tasks.base import SPLITS
from unirep.tasks.detection.base import DetectionTask
from unirep.tasks.offline._common import data_root
from unirep.tasks.offline.skimage_data import skimage_data_dir

GENERATOR = "unirep.detection.compose"


@register_task("composed-scenes")
class ComposedScenesTask(DetectionTask):
    def config(self) -> SceneConfig:
        where = f"tasks/{self.name}.yaml"
        if self.card.extra.get("generator") != GENERATOR:
            raise DataError(f"{where}: extra.generator must be {GENERATOR!r}")
        config = SceneConfig.from_dict(self.card.extra, self.card.seed, self.card.counts, where)
        names = tuple(c.name for c in config.classes)
        if names != self.card.classes:
            raise DataError(f"{where}: classes {list(self.card.classes)} differ from extra.objects' names "
                            f"{list(names)}")
        return config

    def load_splits(self) -> tuple[dict[str, DetectionSet], str]:
        config = self.config()
        folder = skimage_data_dir()
        if folder is None:
            raise DataError(f"task {self.name!r}: scikit-image's data folder is missing; install it with "
                            f"`{self.card.provides}`")
        # Keyed by the generator's settings alone, so a run that finds the scenes on disk never reads the sources
        # (~25 s for Fashion-MNIST here); the manifest's data hash is of the scenes themselves either way.
        key = sha256_json({"generator": GENERATOR, "config": config.to_dict()})[:16]
        composer = functools.cache(lambda: SceneComposer(config, folder))
        splits, shas = {}, {}
        for split in SPLITS:
            images, boxes, labels = self._generated(composer, config.counts[split], split, key)
            shas[split] = scenes_sha256(images, boxes, labels)
            ids = [f"{split}/{i:05d}" for i in range(len(images))]
            splits[split] = DetectionSet.from_arrays(images, boxes, labels, ids, self.card.classes,
                                                     f"{self.name} {split} scenes")
        return splits, sha256_json(shas)

    def _generated(self, composer, count: int, split: str, key: str):
        path = data_root() / self.name / f"{key}-{split}-{count}.npz"
        if path.is_file():
            try:
                with np.load(path) as saved:
                    images, flat_boxes, flat_labels, sizes = (saved[k] for k in ("images", "boxes", "labels", "sizes"))
                cuts = np.cumsum(sizes)[:-1]
                return images, np.split(flat_boxes, cuts), np.split(flat_labels, cuts)
            except (OSError, KeyError, ValueError):
                pass  # a damaged cache entry: generate again and overwrite it
        images, boxes, labels = compose_split(composer(), split, count)
        try:
            atomic_save_npz(path, images=images, boxes=np.concatenate([np.zeros((0, 4), np.float32), *boxes]),
                            labels=np.concatenate([np.zeros(0, np.int64), *labels]),
                            sizes=np.asarray([len(b) for b in boxes], np.int64))
        except OSError:
            pass  # an unwritable cache only costs the regeneration next time
        return images, boxes, labels
