"""Custom tasks from YAML cards (ImageFolder tree or CSV), no code: split built (stratified per class, seeded) when
none is given, manifest written, inputs validated with errors that name the offending rows."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from unirep.errors import ConfigError, DataError
from unirep.tasks import create_task, list_tasks, load_card
from unirep.tasks.custom import add_task_card, add_task_dirs, read_custom_card


def image(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 6), (value % 256, 3, 7)).save(path)
    return path


def write_card(folder: Path, data: dict, **fields) -> tuple[Path, str]:
    name = fields.pop("name", f"custom-{uuid.uuid4().hex[:8]}")  # the task registry is process-wide
    card = {"name": name, "description": "test task", "data": data, **fields}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(card))
    return path, name


def image_folder(root: Path, sizes: dict[str, int]) -> None:
    for c, (label, n) in enumerate(sizes.items()):
        for i in range(n):
            image(root / label / f"{label}_{i:02d}.png", 10 * c + i)


def test_imagefolder_split_is_stratified_seeded_and_manifest_written(tmp_path):
    image_folder(tmp_path / "photos", {"daisy": 10, "rose": 5, "tulip": 3})
    card_path, name = write_card(tmp_path, {"format": "imagefolder", "root": "photos"}, seed=3)
    assert add_task_card(card_path) == name
    task = create_task(name)
    counts = {s: len(task.split(s)) for s in ("train", "val", "test")}
    # per class: round(0.2 n) (at least 1) to test and to val, rest to train: 10 -> 2/2/6, 5 -> 1/1/3, 3 -> 1/1/1
    assert counts == {"train": 10, "val": 4, "test": 4}
    assert task.card.counts == counts and task.card.classes == ("daisy", "rose", "tulip")
    for split in ("train", "val", "test"):
        assert set(np.unique(task.split(split).labels)) == {0, 1, 2}
    manifest_file = tmp_path / "manifests" / f"{name}.json"
    written = json.loads(manifest_file.read_text())
    assert written["digest"] == task.manifest.digest and written["counts"] == counts
    assert written["splits"]["test"] == task.manifest.splits["test"]
    assert all(i.split("/")[0] in {"daisy", "rose", "tulip"} for i in written["splits"]["train"])
    again = create_task(name)
    assert again.manifest.digest == task.manifest.digest  # same data and seed -> same split


def test_csv_with_given_split_and_val_carved_from_train(tmp_path):
    rows = ["path,label,split"]
    for c, label in enumerate(["cat", "dog"]):
        for i in range(6):
            image(tmp_path / "img" / f"{label}{i}.png", c * 10 + i)
            rows.append(f"img/{label}{i}.png,{label},{'test' if i >= 4 else 'train'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    card_path, name = write_card(tmp_path, {"format": "csv", "csv": "labels.csv"}, classes=["dog", "cat"])
    task = create_task(add_task_card(card_path))
    assert task.card.classes == ("dog", "cat")  # the card's order defines the label numbers
    test = task.split("test")
    assert sorted(test.ids) == ["img/cat4.png", "img/cat5.png", "img/dog4.png", "img/dog5.png"]
    assert dict(zip(test.ids, test.labels.tolist(), strict=True))["img/dog4.png"] == 0
    assert {s: len(task.split(s)) for s in ("train", "val", "test")} == {"train": 6, "val": 2, "test": 4}
    assert name in list_tasks()


def test_labels_outside_the_list_name_the_rows(tmp_path):
    image(tmp_path / "a.png")
    image(tmp_path / "b.png")
    (tmp_path / "labels.csv").write_text("path,label\na.png,cat\nb.png,horse\n")
    card_path, _ = write_card(tmp_path, {"format": "csv", "csv": "labels.csv"}, classes=["cat", "dog"])
    with pytest.raises(DataError, match=r"labels.csv row 3: 'horse'"):
        create_task(add_task_card(card_path)).split("train")


def test_missing_files_name_the_rows(tmp_path):
    image(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text("path,label\na.png,cat\nmissing.png,cat\n")
    card_path, _ = write_card(tmp_path, {"format": "csv", "csv": "labels.csv"})
    with pytest.raises(DataError, match=r"1 image file\(s\) not found \(labels.csv row 3: .*missing.png"):
        create_task(add_task_card(card_path)).split("train")


def test_unreadable_images_name_the_rows(tmp_path):
    image_folder(tmp_path / "photos", {"a": 3, "b": 3})
    (tmp_path / "photos" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    card_path, _ = write_card(tmp_path, {"format": "imagefolder", "root": "photos"})
    with pytest.raises(DataError, match=r"1 unreadable image\(s\) \(.*broken.png"):
        create_task(add_task_card(card_path)).split("train")


def test_classes_with_too_few_examples_are_named(tmp_path):
    image_folder(tmp_path / "photos", {"many": 6, "few": 2})
    card_path, _ = write_card(tmp_path, {"format": "imagefolder", "root": "photos"})
    with pytest.raises(DataError, match=r"fewer than 3 examples: few \(2\)"):
        create_task(add_task_card(card_path)).split("train")


def test_declared_class_without_images_is_too_few(tmp_path):
    image_folder(tmp_path / "photos", {"a": 4, "b": 4})
    card_path, _ = write_card(tmp_path, {"format": "imagefolder", "root": "photos"}, classes=["a", "b", "c"])
    with pytest.raises(DataError, match=r"c \(0\)"):
        create_task(add_task_card(card_path)).split("train")


def test_bad_split_values_and_duplicates_name_the_rows(tmp_path):
    for i in range(3):
        image(tmp_path / f"{i}.png", i)
    (tmp_path / "bad.csv").write_text("path,label,split\n0.png,a,train\n1.png,a,validation\n2.png,a,test\n")
    card_path, _ = write_card(tmp_path, {"format": "csv", "csv": "bad.csv"})
    with pytest.raises(DataError, match=r"bad.csv row 3: 'validation'"):
        create_task(add_task_card(card_path)).split("train")
    (tmp_path / "dup.csv").write_text("path,label\n0.png,a\n1.png,a\n0.png,a\n2.png,a\n")
    card_path, _ = write_card(tmp_path, {"format": "csv", "csv": "dup.csv"})
    with pytest.raises(DataError, match=r"dup.csv row 4 repeats dup.csv row 2"):
        create_task(add_task_card(card_path)).split("train")


def test_imagefolder_with_split_folders_is_used_as_given(tmp_path):
    for split, n in (("train", 4), ("val", 1), ("test", 2)):
        image_folder(tmp_path / "data" / split, {"x": n, "y": n})
    card_path, name = write_card(tmp_path, {"format": "imagefolder", "root": "data"})
    task = create_task(add_task_card(card_path))
    assert {s: len(task.split(s)) for s in ("train", "val", "test")} == {"train": 8, "val": 2, "test": 4}
    assert all(i.startswith("test/") for i in task.manifest.splits["test"])


@pytest.mark.parametrize("change,message", [
    ({"metric": "map"}, "metric 'map' is not one of"),
    ({"data": {"format": "parquet", "root": "x"}}, "data.format must be one of"),
    ({"data": {"format": "csv"}}, "data.csv is required"),
    ({"data": {"format": "imagefolder", "root": "x", "val_fraction": 1.5}}, "between 0 and 1"),
    ({"colour": "red"}, "unknown field"),
    ({"name": "bad name!"}, "must be letters"),
])
def test_card_errors_are_config_errors(tmp_path, change, message):
    card = {"name": "ok-name", "description": "d", "data": {"format": "imagefolder", "root": "x"}, **change}
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(card))
    with pytest.raises(ConfigError, match=message):
        read_custom_card(path)


def test_task_dirs_register_cards_and_names_cannot_shadow_builtins(tmp_path):
    image_folder(tmp_path / "photos", {"a": 3, "b": 3})
    _, name = write_card(tmp_path, {"format": "imagefolder", "root": "photos"})
    assert add_task_dirs([tmp_path]) == [name]
    assert add_task_dirs([tmp_path]) == [name]  # idempotent for the same file
    assert load_card(name).extra["data"]["root"] == str((tmp_path / "photos").resolve())
    clash = tmp_path / "other"
    clash.mkdir()
    card_path, _ = write_card(clash, {"format": "imagefolder", "root": "../photos"}, name="sklearn-digits")
    with pytest.raises(ConfigError, match="already taken"):
        add_task_card(card_path)


def test_custom_task_runs_through_unirep_eval(tmp_path):
    from unirep.config import EvalConfig, load_config
    from unirep.evaluate import evaluate

    image_folder(tmp_path / "photos", {"dark": 6, "bright": 6})
    for i in range(6):  # make the classes separable by colour, as real classes are by content
        image(tmp_path / "photos" / "bright" / f"bright_{i:02d}.png", 250)
    card_path, name = write_card(tmp_path, {"format": "imagefolder", "root": "photos"})
    add_task_card(card_path)
    cfg = load_config(EvalConfig, None, ["backbones=[raw-pixels]", f"tasks=[{name}]", "protocols=[linear]",
                                         f"out={tmp_path}/run", f"cache_dir={tmp_path}/cache", "linear.n_c=5"])
    (record,) = evaluate(cfg)
    assert record.task == name and record.metric == "top1" and record.score == 100.0
    assert (record.n_train, record.n_val, record.n_test) == (8, 2, 2)
    written = json.loads((tmp_path / "manifests" / f"{name}.json").read_text())
    assert record.split_manifest["digest"] == written["digest"]
