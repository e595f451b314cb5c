"""The composed-scenes detection task: counts, kind, published manifest, bit-exact regeneration from the seed, and
boxes that are the tight boxes of the pasted masks (checked on a flat background, where every changed pixel is
the object's)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from unirep.detection.compose import ObjectClass, SceneComposer, SceneConfig, scenes_sha256
from unirep.errors import DataError
from unirep.tasks import create_task
from unirep.tasks.base import CARDS_DIR
from unirep.tasks.offline.skimage_data import skimage_data_dir

COUNTS = {"train": 600, "val": 200, "test": 300}


@pytest.fixture(scope="module")
def task():
    return create_task("composed-scenes")


def test_counts_kind_and_published_manifest(task):
    assert task.kind == "detection"
    assert task.card.counts == COUNTS
    assert {s: len(task.split(s)) for s in COUNTS} == COUNTS
    published = json.loads((CARDS_DIR / "manifests" / "composed-scenes.json").read_text())
    assert published["digest"] == task.manifest.digest
    assert published["counts"] == COUNTS
    assert "COMPOSED" in task.card.description  # the card says the scenes are composed
    scenes = task.split("test")
    assert scenes.image(0).shape == (3, 128, 128)
    per_scene = [len(scenes.target(i)["labels"]) for i in range(len(scenes))]
    assert 1 <= min(per_scene) and max(per_scene) <= 6
    assert (scenes.object_counts() > 100).all()  # every class well represented in test


def test_regenerated_scenes_are_bit_identical(task):
    config = task.config()
    composer = SceneComposer(config, skimage_data_dir())
    for split in COUNTS:
        stored = task.split(split)
        for i in (0, 1, len(stored) - 1):
            scene = composer.scene(split, i)
            np.testing.assert_array_equal(scene.image, stored.array(i))
            np.testing.assert_array_equal(scene.boxes, stored.target(i)["boxes"].numpy())
            np.testing.assert_array_equal(scene.labels, stored.target(i)["labels"].numpy())
    # order independence: scene 5 made alone equals scene 5 made after 0..4
    alone = SceneComposer(config, skimage_data_dir()).scene("val", 5)
    assert scenes_sha256(alone.image[None], [alone.boxes], [alone.labels]) == scenes_sha256(
        task.split("val").array(5)[None], [task.split("val").target(5)["boxes"].numpy()],
        [task.split("val").target(5)["labels"].numpy()])


def test_boxes_are_tight_boxes_of_the_pasted_mask(tmp_path):
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(tmp_path / "flat.png")
    config = SceneConfig(classes=(ObjectClass("four", "opencv-digits", 4), ObjectClass("elephant", "animal-mnist", 5)),
                         backgrounds=("flat.png",), image_size=96, min_objects=1, max_objects=1, min_size=30,
                         max_size=60, seed=3, counts={"train": 10, "val": 5, "test": 5})
    composer = SceneComposer(config, tmp_path)
    filled = []
    for i in range(10):
        scene = composer.scene("train", i)
        changed = np.abs(scene.image.astype(int) - 128).max(axis=2) > 0
        rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        x1, y1, x2, y2 = scene.boxes[0]
        # soft mask edges (alpha < 0.5) may reach one pixel past the box, never more
        assert cols[0] <= x1 <= cols[0] + 1 and cols[-1] <= x2 <= cols[-1] + 2
        assert rows[0] <= y1 <= rows[0] + 1 and rows[-1] <= y2 <= rows[-1] + 2
        filled.append(changed[int(y1):int(y2), int(x1):int(x2)].mean())
    assert np.mean(filled) < 0.8  # a mask, not a pasted square


def test_object_pools_are_disjoint_across_splits(task):
    composer = SceneComposer(task.config(), skimage_data_dir())
    for k in range(len(task.card.classes)):
        pools = [set(composer.pools[s][k].tolist()) for s in COUNTS]
        assert not (pools[0] & pools[1] or pools[0] & pools[2] or pools[1] & pools[2])


def test_classification_entry_point_is_refused(task):
    with pytest.raises(DataError, match="detection task"):
        task.load_examples()


def test_classification_protocols_refuse_a_detection_task_in_one_line(task, tmp_path, capsys):
    from unirep.cli import main

    code = main(["eval", "raw-pixels", "--tasks", "composed-scenes", "--protocols", "linear", "--out", str(tmp_path)])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2
    assert "is a detection task" in errors[-1] and "--protocols detection" in errors[-1]
