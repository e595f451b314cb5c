"""Multi-label end to end: a VOC2007 folder (JPEGImages, Annotations, ImageSets/Main) -> task splits with (N, 20)
targets -> features -> one-vs-rest probe with C chosen on val -> mAP on the sealed test split."""

from __future__ import annotations

import dataclasses

import numpy as np
from standard_fixtures import _voc, jpeg

from unirep.metrics import Metric
from unirep.probes import FeatureSplit, SealedSplit
from unirep.probes.multilabel import MultiLabelLinearProbe
from unirep.tasks import TASKS, list_tasks, load_card

CHANNEL = {"cat": 0, "dog": 1, "person": 2}  # each class brightens one colour channel of its images


def colour_coded_voc(root, n_per_set: int = 16) -> None:
    rng = np.random.default_rng(0)
    sets = {}
    for image_set in ("train", "val", "test"):
        images = []
        for _ in range(n_per_set):
            present = [name for name in CHANNEL if rng.random() < 0.5] or ["person"]
            images.append([(name, 0) for name in present])
        sets[image_set] = images
    info = _voc(root, "2007", sets)
    for image_id, objects in info["objects"].items():  # repaint: colour = which classes are present
        colour = [40, 40, 40]
        for name, _ in objects:
            colour[CHANNEL[name]] = 220
        path = root / "VOCdevkit" / "VOC2007" / "JPEGImages" / f"{image_id}.jpg"
        jpeg(path, 0)
        from PIL import Image

        Image.new("RGB", (8, 8), tuple(colour)).save(path, quality=95)


def mean_colour(images) -> np.ndarray:
    return np.stack([np.asarray(images[i][0], dtype=np.float64).mean(axis=(0, 1)) / 255 for i in range(len(images))])


def test_voc_multilabel_probe_scores_map_on_the_sealed_test(tmp_path):
    list_tasks()
    colour_coded_voc(tmp_path)
    card = dataclasses.replace(load_card("voc2007"), counts={"train": 16, "val": 16, "test": 16})
    task = TASKS.get("voc2007")(card, root=tmp_path, download=False)
    splits = {s: task.split(s) for s in ("train", "val", "test")}
    assert splits["train"].labels.shape == (16, 20)
    features = {s: mean_colour(images) for s, images in splits.items()}
    probe = MultiLabelLinearProbe(Cs=np.logspace(-2, 3, 6))
    metric = Metric(card.metric)
    probe.select(FeatureSplit(features["train"], splits["train"].labels),
                 FeatureSplit(features["val"], splits["val"].labels), metric)
    outcome = SealedSplit(features["test"], splits["test"].labels).evaluate(probe, metric)
    assert outcome.predictions.shape == (16, 20)
    assert outcome.score > 95  # colour encodes the labels exactly, so a working pipeline ranks them all right
    shuffled = Metric.MAP_VOC07(splits["test"].labels, np.random.default_rng(1).normal(size=(16, 20)))
    assert shuffled < outcome.score


def test_unirep_eval_pipeline_records_map_for_voc(tmp_path, monkeypatch):
    """The evaluation pipeline (task -> raw-pixels features -> cache -> linear protocol -> record) dispatches a
    multi-label task to the one-vs-rest probe and records the card's mAP."""
    from unirep.config import EvalConfig, load_config
    from unirep.evaluate import evaluate
    from unirep.tasks import base

    list_tasks()
    colour_coded_voc(tmp_path)
    monkeypatch.setenv("UNIREP_DATA_ROOT", str(tmp_path))
    small = dataclasses.replace(load_card("voc2007"), counts={"train": 16, "val": 16, "test": 16})
    monkeypatch.setitem(base._REGISTERED_CARDS, "voc2007", small)  # the fixture's counts, for this test only
    cfg = load_config(EvalConfig, None, ["backbones=[raw-pixels]", "tasks=[voc2007]", "protocols=[linear]",
                                         f"out={tmp_path}/run", f"cache_dir={tmp_path}/cache", "linear.n_c=6"])
    (record,) = evaluate(cfg)
    assert record.metric == "map_voc07" and record.score > 95
    assert (record.n_train, record.n_val, record.n_test) == (16, 16, 16)
    assert np.asarray(record.test_predictions).shape == (16, 20)  # per-class scores, for bootstrap CIs
