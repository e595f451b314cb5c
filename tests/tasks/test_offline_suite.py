"""Every task of the embedded offline suite, on its real data: split table, classes, disjointness, published
manifest, image format. Parametrized over the registry, so a new offline task is covered by registering it."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from unirep.metrics import Metric
from unirep.tasks import SPLITS, create_task, list_tasks
from unirep.tasks.offline.write_manifests import manifest_path, stale_manifests, write_manifests

OFFLINE = list_tasks(suite="offline")


@pytest.fixture(scope="module", params=OFFLINE)
def task(request):
    return create_task(request.param)


def test_suite_has_the_embedded_tasks():
    expected = {"fashion-mnist", "sklearn-digits", "animal-mnist", "lfw-faces", "textile-defects", "opencv-digits",
                "skimage-textures"}
    assert expected <= set(OFFLINE)


def test_card_is_complete(task):
    card = task.card
    assert Metric(card.metric) in (Metric.TOP1, Metric.MEAN_PER_CLASS)
    assert len(set(card.classes)) == len(card.classes) >= 2
    for field in ("description", "source", "licence", "split", "provides"):
        assert getattr(card, field).strip(), f"{card.name}: card field {field} is empty"
    assert set(card.counts) == set(SPLITS)


def test_counts_equal_card(task):
    assert task.manifest.counts == task.card.counts
    assert {s: len(task.split(s)) for s in SPLITS} == task.card.counts


def test_every_class_in_every_split(task):
    for split in SPLITS:
        labels = task.split(split).labels
        assert labels.min() >= 0 and labels.max() < task.card.num_classes
        assert set(np.unique(labels).tolist()) == set(range(task.card.num_classes)), split


def test_splits_disjoint_and_ids_unique(task):
    examples, _, _ = task._loaded
    assert len(set(examples.ids)) == len(examples.ids)
    ids = {s: set(task.manifest.splits[s]) for s in SPLITS}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]


def test_imbalanced_tasks_use_mean_per_class(task):
    examples, _, _ = task._loaded
    counts = np.bincount(examples.labels, minlength=task.card.num_classes)
    if counts.max() > 1.2 * counts.min():
        assert task.card.metric == Metric.MEAN_PER_CLASS.value


def test_manifest_matches_published(task):
    published = json.loads(manifest_path(task.name).read_text(encoding="utf-8"))
    assert re.fullmatch(r"[0-9a-f]{64}", task.manifest.data_sha256)
    assert published["digest"] == task.manifest.digest, (
        f"{task.name}: data or split changed; if intended run `python -m unirep.tasks.offline.write_manifests`"
    )
    assert published["counts"] == task.card.counts
    assert published["splits"] == task.manifest.splits


def test_images_are_rgb_and_labels_match(task):
    for split in SPLITS:
        images = task.split(split)
        for index in (0, len(images) // 2, len(images) - 1):
            image, label = images[index]
            assert isinstance(image, Image.Image) and image.mode == "RGB"
            assert min(image.size) >= 8
            assert label == images.labels[index]
            pixels = np.asarray(image)
            assert pixels.dtype == np.uint8 and pixels.max() > pixels.min()  # not a blank decode


def test_rewriting_manifests_is_byte_identical(tmp_path):
    # The generator reproduces the committed files exactly (sklearn-digits and lfw-faces load in well under 1 s).
    for path in write_manifests(["sklearn-digits", "lfw-faces"], tmp_path):
        assert path.read_bytes() == manifest_path(path.stem).read_bytes()


def test_stale_manifest_is_reported(tmp_path):
    (path,) = write_manifests(["lfw-faces"], tmp_path)
    manifest = json.loads(path.read_text())
    manifest["digest"] = "0" * 64
    path.write_text(json.dumps(manifest))
    (problem,) = stale_manifests(["lfw-faces"], tmp_path)
    assert problem.startswith(f"lfw-faces: published digest {'0' * 12} != current "
                              f"{create_task('lfw-faces').manifest.digest[:12]}")
    assert "missing" in stale_manifests(["sklearn-digits"], tmp_path)[0]
