"""The detection protocol on tiny composed scenes (64 px, 2 classes, 32/16/16 images, 2 learning rates x 2 epochs):
its test score equals plain pycocotools on the detections it saved, the learning rate and epoch are chosen on val
alone (a spy on the mAP calls), and backbones without spatial maps are refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from coco_reference import cocoeval_stats
from omegaconf import OmegaConf

import unirep.detection.protocol as protocol_module
from unirep.backbones import create_backbone
from unirep.config import EvalConfig
from unirep.detection.compose import ObjectClass, SceneComposer, SceneConfig, compose_split
from unirep.detection.data import DetectionSet
from unirep.errors import ConfigError
from unirep.metrics import Metric
from unirep.protocols import SealedImages, TaskImages, create_protocol
from unirep.tasks.offline.skimage_data import skimage_data_dir

COUNTS = {"train": 32, "val": 16, "test": 16}
CLASSES = ("digit_four", "elephant")


@pytest.fixture(scope="module")
def scenes():
    objects = (ObjectClass("digit_four", "opencv-digits", 4), ObjectClass("elephant", "animal-mnist", 5))
    config = SceneConfig(classes=objects, backgrounds=("brick.png", "coffee.png"), image_size=64, max_objects=3,
                         min_size=20,
                         max_size=40, seed=1, counts=COUNTS)
    composer = SceneComposer(config, skimage_data_dir())
    out = {}
    for split, count in COUNTS.items():
        images, boxes, labels = compose_split(composer, split, count)
        out[split] = DetectionSet.from_arrays(images, boxes, labels, [f"{split}/{i}" for i in range(count)], CLASSES,
                                              split)
        out[split].task = "tiny-scenes"
    return out


@pytest.fixture(scope="module")
def backbone():
    return create_backbone("mobilenetv2_100.packaged_in1k")


def run_config(tmp_path):
    cfg = OmegaConf.structured(EvalConfig(backbones=["x"], tasks=["tiny-scenes"], out=str(tmp_path)))
    return OmegaConf.merge(cfg, {"detection": {"lrs": [0.003, 0.001], "max_epochs": 2, "val_every": 1,
                                               "input_size": 64, "batch_size": 8},
                                 "finetune": {"accelerator": "cpu"}})


def run_protocol(scenes, backbone, cfg):
    data = TaskImages(train=scenes["train"], val=scenes["val"], test=SealedImages(scenes["test"]), backbone=backbone,
                      num_classes=len(CLASSES))
    torch.manual_seed(0)
    return create_protocol("detection", cfg).run(data, Metric.COCO_MAP, seed=0)


@pytest.fixture(scope="module")
def spied_run(scenes, backbone, tmp_path_factory):
    calls: list[tuple[str, int]] = []  # (split whose targets were scored, number of images)
    real = protocol_module.detection_map
    fingerprints = {split: [t["boxes"].sum().item() for t in scenes[split].targets] for split in scenes}

    def spy(predictions, targets, *args, **kwargs):
        prints = [t["boxes"].sum().item() for t in targets]
        # val targets reach the selection scaled to the input size (64 px scenes at 64 px: unchanged)
        split = next((s for s, p in fingerprints.items() if len(p) == len(prints) and np.allclose(p, prints)), "other")
        calls.append((split, len(targets)))
        return real(predictions, targets, *args, **kwargs)

    protocol_module.detection_map = spy
    try:
        out = tmp_path_factory.mktemp("detection-run")
        outcome = run_protocol(scenes, backbone, run_config(out))
    finally:
        protocol_module.detection_map = real
    return outcome, calls, out


def test_selection_sees_val_only_and_test_is_scored_once_after_it(spied_run):
    outcome, calls, _ = spied_run
    selection_calls = calls[:-1]
    assert [s for s, _ in selection_calls] == ["val"] * 4  # 2 learning rates x 2 scored epochs, val each time
    assert calls[-1][0] == "test"  # the per-class summary of the one test scoring, after the choice
    sweep = outcome.extra["val_sweep"]
    best = max((v, -i) for i, (lr, by_epoch) in enumerate(sweep.items()) for v in by_epoch.values())
    assert outcome.val_score == pytest.approx(best[0], abs=1e-3)
    assert sweep[f"{outcome.hyperparameters['lr']:g}"][str(outcome.hyperparameters["epochs"])] == pytest.approx(
        outcome.val_score, abs=1e-3)


def test_test_score_equals_pycocotools_on_the_saved_detections(spied_run, scenes):
    outcome, _, out = spied_run
    saved = json.loads((out / outcome.extra["predictions_file"]).read_text())
    assert saved["task"] == "tiny-scenes" and len(saved["detections"]) == COUNTS["test"]
    preds = [{k: torch.tensor(v, dtype=torch.float32 if k != "labels" else torch.int64).reshape(-1, 4)
              if k == "boxes" else torch.tensor(v) for k, v in d.items()} for d in saved["detections"]]
    ref_map, ref_50 = cocoeval_stats(preds, scenes["test"].targets, num_classes=len(CLASSES))
    assert ref_map > 0.0  # something was detected
    assert outcome.score == pytest.approx(100.0 * ref_map, abs=1e-4)
    assert outcome.extra["map_50"] == pytest.approx(100.0 * ref_50, abs=1e-3)
    assert outcome.metric == "coco_map"
    assert set(outcome.extra["per_class"]) == set(CLASSES)


def test_backbones_without_maps_and_classification_tasks_are_refused(scenes, tmp_path):
    cfg = run_config(tmp_path)
    with pytest.raises(ConfigError, match="spatial feature maps"):
        run_protocol(scenes, create_backbone("raw-pixels"), cfg)
    with pytest.raises(ConfigError, match="detection.lrs"):
        run_protocol(scenes, create_backbone("raw-pixels"), OmegaConf.merge(cfg, {"detection": {"lrs": []}}))


def test_the_leaderboard_shows_detection_as_its_own_block_with_map50(spied_run, tmp_path):
    from unirep.leaderboard.board import build_leaderboard
    from unirep.leaderboard.markdown import render_markdown
    from unirep.results import ResultRecord, write_record

    outcome, _, _ = spied_run
    record = ResultRecord(backbone="mobilenetv2_100.packaged_in1k", task="tiny-scenes", protocol="detection",
                          metric=outcome.metric, score=outcome.score, val_score=outcome.val_score,
                          hyperparameters=outcome.hyperparameters, n_train=32, n_val=16, n_test=16,
                          split_manifest={"digest": "d", "counts": COUNTS}, seed=0, timings=outcome.timings,
                          versions={}, config={}, extra=outcome.extra)
    write_record(tmp_path, record)
    board = build_leaderboard([tmp_path], n_boot=0)
    markdown = render_markdown(board)
    assert "## detection · all tasks (1)" in markdown
    assert f"{outcome.score:.2f} (mAP@.5 {outcome.extra['map_50']:.2f})" in markdown
    assert json.loads(board.long["secondary_scores"].iloc[0]) == {"mAP@.5": outcome.extra["map_50"]}
