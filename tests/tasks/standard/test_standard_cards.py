"""Every standard card (Kornblith-12, Tamaazousti-10, VTAB-1k) loads a tiny fixture written in its dataset's real
on-disk format: counts, classes and splits as the card's `extra.fixture` states; absent data gives one line
with the command or URL that provides it; nothing is downloaded."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from standard_fixtures import WRITERS

from unirep.errors import DataError
from unirep.metrics import Metric
from unirep.tasks import TASKS, create_task, list_suites, list_tasks, load_card, resolve_tasks
from unirep.tasks.base import CARDS_DIR, SPLITS

list_tasks()  # imports the adapter modules, so TASKS holds every registered adapter
STANDARD_CARDS = sorted(p.stem for p in (CARDS_DIR / "standard").glob("*.yaml"))
SUITES = {"kornblith12": 12, "tamaazousti10": 10, "vtab1k": 11}


def fixture_task(name: str, root: Path):
    """The registered adapter on the card with its fixture counts/settings, rooted at a fresh fixture."""
    task_cls = TASKS.get(name)
    card = load_card(name)
    info = WRITERS[task_cls.__name__](root, card)
    fixture = card.extra["fixture"]
    extra = {**card.extra, **fixture.get("extra", {})}
    if extra.get("split_manifest") == "<fixture>":
        extra["split_manifest"] = info["manifest"]
    card = dataclasses.replace(card, counts=dict(fixture["counts"]), extra=extra)
    return task_cls(card, root=root, download=False), info


def labels_by_id(task) -> dict:
    out = {}
    for split in SPLITS:
        images = task.split(split)
        out.update(zip(images.ids, images.labels, strict=True))
    return out


def test_the_cards_are_the_three_suites():
    assert len(STANDARD_CARDS) == 29
    for suite, size in SUITES.items():
        assert len(list_tasks(suite=suite)) == size, suite
    assert set(SUITES) <= set(list_suites())


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_collection_files_match_the_cards(suite):
    collection = yaml.safe_load((CARDS_DIR / "suites" / f"{suite}.yaml").read_text())
    assert collection["name"] == suite and collection["description"]
    assert sorted(collection["tasks"]) == list_tasks(suite=suite)
    assert resolve_tasks([suite]) == list_tasks(suite=suite)


@pytest.mark.parametrize("name", STANDARD_CARDS)
def test_card_states_source_split_counts_metric_licence(name):
    card = load_card(name)
    assert card.source and card.licence and card.split and card.provides
    assert Metric(card.metric).needs_scores == card.multilabel
    assert set(card.counts) == set(SPLITS) and all(v > 0 for v in card.counts.values())
    assert card.extra["published_counts"] and card.extra["layout"].startswith("<root>/")
    assert card.num_classes > 0
    assert set(card.extra["fixture"]["counts"]) == set(SPLITS)


def test_kornblith_metrics_and_val_rule():
    """Mean per-class accuracy for Aircraft, Caltech-101, Flowers-102, Pets; 11-point mAP for VOC07; top-1
    elsewhere; val = 20% of train when the data has no official val."""
    per_class = {"fgvc-aircraft", "caltech101", "flowers102", "oxford-pets"}
    for name in list_tasks(suite="kornblith12"):
        card = load_card(name)
        expected = "mean_per_class" if name in per_class else "map_voc07" if name == "voc2007" else "top1"
        assert card.metric == expected, name
    assert load_card("cifar10").counts == {"train": 40000, "val": 10000, "test": 10000}
    assert load_card("stanford-cars").counts == {"train": 6515, "val": 1629, "test": 8041}
    assert load_card("caltech101").counts == {"train": 2448, "val": 612, "test": 6084}
    assert load_card("voc2007").counts == {"train": 2501, "val": 2510, "test": 4952}
    assert all(load_card(n).counts["train"] == 800 and load_card(n).counts["val"] == 200
               for n in list_tasks(suite="vtab1k"))


@pytest.mark.parametrize("name", STANDARD_CARDS)
def test_fixture_counts_classes_and_splits(name, tmp_path):
    task, info = fixture_task(name, tmp_path)
    card = load_card(name)
    fixture = card.extra["fixture"]
    manifest = task.manifest
    assert manifest.counts == fixture["counts"]
    split_ids = [set(manifest.splits[s]) for s in SPLITS]
    assert sum(len(s) for s in split_ids) == len(set().union(*split_ids)), "splits overlap"
    expected_classes = fixture.get("extra", {}).get("num_classes", card.num_classes)
    assert task.card.num_classes == expected_classes
    if "classes" in info and len(info["classes"]) == task.card.num_classes:
        assert list(task.card.classes) == info["classes"]
    found = labels_by_id(task)
    checked = [example_id for example_id in info.get("label_of", {}) if example_id in found]
    assert checked or "label_of" not in info  # VTAB subsets may drop some of the named examples, never all
    for example_id in checked:
        assert task.card.classes[found[example_id]] == info["label_of"][example_id], example_id
    image, _ = task.split("train")[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    again, _ = fixture_task(name, tmp_path / "again")
    assert again.manifest.splits == manifest.splits  # deterministic (same files, same seed)


@pytest.mark.parametrize("name", STANDARD_CARDS)
def test_missing_data_is_one_line_with_the_fix(name, tmp_path, monkeypatch):
    monkeypatch.setenv("UNIREP_DATA_ROOT", str(tmp_path / "empty"))
    monkeypatch.delenv("UNIREP_ALLOW_DOWNLOAD", raising=False)
    task = create_task(name)  # creating never needs the data; loading does
    with pytest.raises(DataError) as error:
        task.split("test")
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "empty") in message
    assert "http" in message or "no automatic download" in message


def test_cifar10_pixels_labels_and_official_test(tmp_path):
    task, info = fixture_task("cifar10", tmp_path)
    test = task.split("test")
    assert sorted(test.ids) == [f"test/{i:05d}" for i in range(10)]
    assert sorted(test.labels.tolist()) == info["test_labels"]
    found = labels_by_id(task)
    assert found["train/00000"] == info["first_train_label"]
    image = next(task.split(s)[i][0] for s in SPLITS for i, e in enumerate(task.split(s).ids) if e == "train/00000")
    expected = info["first_train_row"].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(np.asarray(image), expected)


def test_cifar_pickle_with_foreign_code_is_refused(tmp_path):
    import os
    import pickle

    task, _ = fixture_task("cifar10", tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"data": Evil()}, protocol=2))
    with pytest.raises(DataError, match="not allowed"):
        task.split("test")


def test_svhn_digit_zero_and_image_layout(tmp_path):
    task, info = fixture_task("vtab-svhn", tmp_path)
    found = labels_by_id(task)
    assert len(found) == 12 + 5
    for example_id, label in found.items():
        assert label == int(example_id.split("/")[1]) % 10  # the .mat stores digit 0 as 10
    split = next(s for s in SPLITS if "train/00000" in task.split(s).ids)
    images = task.split(split)
    np.testing.assert_array_equal(np.asarray(images[images.ids.index("train/00000")][0]), info["first_train_image"])


def test_flowers_labels_are_one_based_in_the_mat_file(tmp_path):
    task, info = fixture_task("flowers102", tmp_path)
    found = labels_by_id(task)
    assert found["flowers-102/jpg/image_00001.jpg"] == 0 and found["flowers-102/jpg/image_00011.jpg"] == 101
    assert task.card.classes[101] == "blackberry lily"


def test_voc2007_targets_follow_the_devkit_difficult_rule(tmp_path):
    task, info = fixture_task("voc2007", tmp_path)
    classes = list(task.card.classes)
    found = labels_by_id(task)
    assert len(found) == 12 and all(t.shape == (20,) for t in found.values())
    first = found["2007_000001"]
    assert first[classes.index("cat")] == 1  # one normal cat beats a difficult one
    assert first[classes.index("dog")] == -1  # difficult only: ignored
    assert first[classes.index("person")] == 0
    assert task.split("test").labels.shape == (4, 20)
    assert task.manifest.splits["test"] == [f"2007_{k:06d}" for k in range(9, 13)]


def test_voc2012_tests_on_the_official_val(tmp_path):
    task, _ = fixture_task("voc2012", tmp_path)
    assert task.manifest.splits["test"] == [f"2012_{k:06d}" for k in range(7, 11)]
    carved = set(task.manifest.splits["train"]) | set(task.manifest.splits["val"])
    assert carved <= {f"2012_{k:06d}" for k in range(1, 7)}


def test_nuswide_multilabel_csv_and_counts_from_data(tmp_path):
    task, info = fixture_task("nuswide-obj", tmp_path)
    found = labels_by_id(task)
    classes = list(task.card.classes)
    for example_id, names in info["targets_of"].items():
        assert {classes[i] for i in np.flatnonzero(found[example_id] == 1)} == names
    assert task.card.counts == {"train": 8, "val": 2, "test": 4}


@pytest.mark.parametrize("name,column", [("vtab-clevr-count", 0), ("vtab-clevr-dist", 1)])
def test_clevr_count_and_distance_labels(name, column, tmp_path):
    task, info = fixture_task(name, tmp_path)
    found = labels_by_id(task)
    for example_id, expected in info["count_and_distance"].items():
        if example_id in found:
            assert found[example_id] == expected[column], example_id
    assert all(e.startswith("clevr/CLEVR_v1.0/images/val/") for e in task.manifest.splits["test"])


def test_caltech101_split_comes_from_the_manifest(tmp_path):
    task, info = fixture_task("caltech101", tmp_path)
    assert task.manifest.splits["test"] == info["test_ids"]
    jpeg_path = tmp_path / "caltech101" / "101_ObjectCategories" / "Faces" / "image_0099.jpg"
    Image.new("RGB", (4, 4)).save(jpeg_path)
    stale, _ = fixture_task("caltech101", tmp_path / "again")
    stale.root = tmp_path  # the same data plus one file the manifest does not list
    with pytest.raises(DataError, match="differ from the split manifest"):
        stale.split("train")


def test_repository_caltech101_manifest_is_30_per_class():
    import json

    manifest = json.loads((CARDS_DIR / "manifests" / "caltech101-30-per-class.json").read_text())
    classes = manifest["classes"]
    assert sorted(classes) == list(load_card("caltech101").classes) and len(classes) == 102
    assert all(len(c["train"]) == 30 for c in classes.values())
    assert sum(len(c["test"]) for c in classes.values()) == 6084 == manifest["counts"]["test"]
    for c in classes.values():  # disjoint and together exactly image_0001..image_n
        numbers = sorted(c["train"] + c["test"])
        assert numbers == list(range(1, len(numbers) + 1))


def test_birdsnap_species_order_and_dead_links(tmp_path):
    task, info = fixture_task("birdsnap", tmp_path)
    assert task.manifest.counts["test"] == 6  # reading the data fills the class names from species.txt
    assert list(task.card.classes) == info["classes"]  # species.txt order by id
    assert task.card.counts == {"train": 12, "val": 3, "test": 6}  # the listed but absent test image is skipped


def test_caltech256_ignores_stray_files_and_keeps_train_per_class(tmp_path):
    task, _ = fixture_task("caltech256", tmp_path)
    train_and_val = task.manifest.splits["train"] + task.manifest.splits["val"]
    per_class = np.bincount([task.card.classes.index(i.split("/")[0].split(".", 1)[1]) for i in train_and_val])
    assert per_class.tolist() == [3, 3, 3]
    assert not any(i.endswith(".txt") for s in SPLITS for i in task.manifest.splits[s])


def test_vtab_drops_the_official_val(tmp_path):
    task, _ = fixture_task("vtab-dtd", tmp_path)
    kept = sorted(int(i[-8:-4]) for i in labels_by_id(task))  # file numbers: train 1-6, val 7-9, test 10-12
    assert kept == [1, 2, 3, 4, 5, 6, 10, 11, 12]


def test_failed_download_is_one_line(tmp_path):
    task = TASKS.get("food101")(load_card("food101"), root=tmp_path, download=True)

    def offline_fetch():
        raise OSError("[Errno -3] Temporary failure in name resolution")

    task.fetch = offline_fetch  # stands in for torchvision's downloader on a machine without network
    with pytest.raises(DataError, match=r"download failed: \[Errno -3\].*food-101.tar.gz"):
        task.split("train")


def test_cli_lists_a_suite_without_its_data(tmp_path, monkeypatch, capsys):
    from unirep.cli import main

    monkeypatch.setenv("UNIREP_DATA_ROOT", str(tmp_path))
    assert main(["list", "tasks", "--suite", "vtab1k"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 11 and rows[0].split()[0] == "vtab-caltech101" and "800/200/6084" in rows[0]
