"""Users' detection data as task cards: COCO jsons, YOLO folders and an ultralytics data.yaml, written in tmp dirs from
a few composed scenes (in those real formats), read back box for box; and the bad inputs, each one line and exit
code 2 through `unirep.cli.main`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from unirep.cli import main
from unirep.detection.compose import ObjectClass, SceneComposer, SceneConfig, compose_split
from unirep.detection.formats.coco import write_coco_json
from unirep.detection.formats.yolo import write_yolo_split
from unirep.tasks import create_task
from unirep.tasks.custom import add_task_card
from unirep.tasks.offline.skimage_data import skimage_data_dir

CLASSES = ("digit_four", "elephant")
COUNTS = {"train": 6, "val": 3, "test": 3}


@pytest.fixture(scope="module")
def scenes():
    objects = (ObjectClass("digit_four", "opencv-digits", 4), ObjectClass("elephant", "animal-mnist", 5))
    config = SceneConfig(classes=objects, backgrounds=("gravel.png",), image_size=48, max_objects=3, min_size=12,
                         max_size=30, seed=2, counts=COUNTS)
    composer = SceneComposer(config, skimage_data_dir())
    scenes = {s: compose_split(composer, s, n) for s, n in COUNTS.items()}
    assert any(len(b) == 0 for b in scenes["train"][1]) is False  # every scene has an object
    return scenes


def write_coco(root, scenes, mutate=None):
    (root / "images").mkdir(parents=True)
    for split, (images, boxes, labels) in scenes.items():
        names = [f"{split}-{i}.png" for i in range(len(images))]
        for name, pixels in zip(names, images, strict=True):
            Image.fromarray(pixels).save(root / "images" / name)
        write_coco_json(root / f"{split}.json", names, [im.shape[:2] for im in images], boxes, labels, CLASSES)
    if mutate is not None:
        raw = json.loads((root / "train.json").read_text())
        mutate(raw)
        (root / "train.json").write_text(json.dumps(raw))


def coco_card(root, name="my-coco", empty="keep"):
    card = {"name": name, "description": "composed scenes exported as COCO", "seed": 0,
            "data": {"format": "coco", "train": "train.json", "val": "val.json", "test": "test.json",
                     "images": "images", "empty_images": empty}}
    (root / f"{name}.yaml").write_text(yaml.safe_dump(card))
    return root / f"{name}.yaml"


def test_coco_card_reads_back_every_box(tmp_path, scenes):
    write_coco(tmp_path, scenes)
    task = create_task(add_task_card(coco_card(tmp_path)))
    assert task.kind == "detection" and task.manifest.counts == COUNTS
    for split, (images, boxes, labels) in scenes.items():
        got = task.split(split)
        assert got.classes == CLASSES
        for i in range(len(images)):
            np.testing.assert_array_equal(got.array(i), images[i])
            np.testing.assert_allclose(got.target(i)["boxes"].numpy(), boxes[i], atol=1e-4)
            np.testing.assert_array_equal(got.target(i)["labels"].numpy(), labels[i])


def test_yolo_folder_and_data_yaml_read_back_every_box(tmp_path, scenes):
    for split, (images, boxes, labels) in scenes.items():
        write_yolo_split(tmp_path / "ds" / "images" / split, [f"{i}.png" for i in range(len(images))], list(images),
                         boxes, labels)
    (tmp_path / "yolo.yaml").write_text(yaml.safe_dump({"name": "my-yolo", "classes": list(CLASSES),
                                                        "data": {"format": "yolo", "root": "ds"}}))
    shutil.rmtree(tmp_path / "ds" / "images" / "test")  # no test split given: carved out of train
    shutil.rmtree(tmp_path / "ds" / "labels" / "test")
    (tmp_path / "ds" / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train",
                                                               "val": "images/val", "names": {0: CLASSES[0],
                                                                                              1: CLASSES[1]}}))
    (tmp_path / "ultra.yaml").write_text(yaml.safe_dump({"name": "my-ultra", "data": {"format": "ultralytics",
                                                                                       "yaml": "ds/data.yaml"}}))
    for card in ("yolo.yaml", "ultra.yaml"):
        task = create_task(add_task_card(tmp_path / card))
        counts = task.manifest.counts
        assert counts["val"] == COUNTS["val"] and counts["train"] + counts["test"] == COUNTS["train"]
        assert counts["test"] == 1  # round(0.2 * 6)
        val = task.split("val")
        assert val.classes == CLASSES
        for i in range(COUNTS["val"]):
            np.testing.assert_allclose(val.target(i)["boxes"].numpy(), scenes["val"][1][i], atol=1e-3)
            np.testing.assert_array_equal(val.target(i)["labels"].numpy(), scenes["val"][2][i])


def run_eval(card, name, capsys) -> tuple[int, str]:
    code = main(["eval", "raw-pixels", "--task-card", str(card), "--tasks", name, "--protocols", "detection",
                 "--out", str(card.parent / "run")])
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    return code, err[-1] if err else ""


@pytest.mark.parametrize(("mutate", "empty", "expected"), [
    (lambda raw: raw["annotations"][0].update(bbox=[3.0, 4.0, 0.0, 5.0]), "keep", "zero or negative width"),
    (lambda raw: raw["annotations"][0].update(bbox=[40.0, 4.0, 20.0, 5.0]), "keep", "reaches outside the 48x48"),
    (lambda raw: raw["annotations"][0].update(category_id=9), "keep", "category_id 9 is not in categories [1, 2]"),
    (lambda raw: raw["images"].append({"id": 99, "file_name": "train-0.png", "width": 48, "height": 48}), "refuse",
     "image id 99 (train-0.png) has no annotations"),
])
def test_bad_coco_input_is_one_line_and_exit_2(tmp_path, scenes, capsys, mutate, empty, expected):
    write_coco(tmp_path, scenes, mutate)
    name = f"bad-coco-{abs(hash(expected)) % 10_000}"
    code, line = run_eval(coco_card(tmp_path, name, empty), name, capsys)
    assert code == 2
    assert expected in line and "train.json" in line
    if "category" in expected or "width" in expected:
        assert "annotation id 1 (image id 0)" in line


def test_an_empty_image_is_kept_as_background_when_the_card_says_keep(tmp_path, scenes):
    write_coco(tmp_path, scenes, lambda raw: raw["images"].append({"id": 99, "file_name": "train-0.png",
                                                                   "width": 48, "height": 48}))
    task = create_task(add_task_card(coco_card(tmp_path, "coco-keep")))
    train = task.split("train")
    assert len(train) == COUNTS["train"] + 1 and len(train.target(len(train) - 1)["boxes"]) == 0


def test_yolo_class_id_out_of_range_names_file_and_line(tmp_path, scenes, capsys):
    for split, (images, boxes, labels) in scenes.items():
        write_yolo_split(tmp_path / "ds" / "images" / split, [f"{i}.png" for i in range(len(images))], list(images),
                         boxes, labels)
    label = tmp_path / "ds" / "labels" / "train" / "1.txt"
    label.write_text(label.read_text() + "5 0.5 0.5 0.2 0.2\n")
    line_no = len(label.read_text().splitlines())
    card = tmp_path / "bad-yolo.yaml"
    card.write_text(yaml.safe_dump({"name": "bad-yolo", "classes": list(CLASSES),
                                    "data": {"format": "yolo", "root": "ds"}}))
    code, line = run_eval(card, "bad-yolo", capsys)
    assert code == 2
    assert f"1.txt line {line_no}: class id 5 is outside 0..1" in line
