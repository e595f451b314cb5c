"""The shipped OoD benchmark cards: their split tables (asserted here, as VTAB's adapters assert theirs), the published
manifests (exact ids, digests of the task splits they are drawn from), and the one-line refusals of bad cards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from unirep.errors import ConfigError, UnirepError, UnknownNameError
from unirep.ood import create_benchmark, list_benchmarks
from unirep.ood.benchmarks import MANIFESTS_DIR, load_benchmark_card

# The split table of every shipped benchmark: set -> examples.
EXPECTED_COUNTS = {
    "fashion-mnist-ood": {"id/train": 3000, "id/val": 600, "id/test": 6000, "val/textile-surfaces": 250,
                          "near/held-out-classes": 4000, "far/animal-silhouettes": 2000, "far/opencv-digits": 2000,
                          "far/texture-patches": 384},
    "animal-mnist-ood": {"id/train": 1800, "id/val": 600, "id/test": 2400, "val/textile-surfaces": 250,
                         "near/held-out-animals": 1600, "far/fashion-articles": 2000, "far/opencv-digits": 2000,
                         "far/texture-patches": 384},
    "opencv-digits-ood": {"id/train": 1200, "id/val": 300, "id/test": 1500, "val/sklearn-digits-6-9": 119,
                          "near/held-out-digits": 1000, "far/fashion-articles": 1500, "far/animal-silhouettes": 1500,
                          "far/texture-patches": 384},
}


@pytest.fixture(scope="module")
def shipped():
    return {name: create_benchmark(name) for name in list_benchmarks()}


def test_three_benchmarks_ship(shipped):
    assert sorted(shipped) == sorted(EXPECTED_COUNTS)


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_counts_card_and_published_manifest_agree(shipped, name):
    bench = shipped[name]
    published = json.loads((MANIFESTS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    assert bench.counts == EXPECTED_COUNTS[name] == bench.card.counts == published["counts"]
    assert published["digest"] == bench.digest
    assert {key: s["ids"] for key, s in published["sets"].items()} == {k: list(s.ids) for k, s in bench.sets.items()}
    assert published["tasks"] == {t: bench.tasks[t].manifest.digest for t in bench.card.tasks}


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_sets_are_disjoint_and_hold_no_id_class(shipped, name):
    bench = shipped[name]
    id_task = bench.tasks[bench.card.id_task]
    id_label_values = [id_task.card.classes.index(c) for c in bench.id_classes]
    assert sorted(np.unique(bench.sets["id/test"].labels)) == list(range(len(bench.id_classes)))
    for key, selection in bench.sets.items():
        if key.startswith("id/"):
            continue
        if selection.task == id_task.name:  # a held-out-class split: none of the ID classes, no ID example
            assert not np.isin(selection.labels, id_label_values).any()
            id_ids = {i for s in ("train", "val", "test") for i in bench.sets[f"id/{s}"].ids}
            assert not id_ids & set(selection.ids)
    val_ids = set(bench.sets[f"val/{bench.card.val.name}"].ids)
    for key in bench.test_set_keys():
        if bench.sets[key].task == bench.card.val.task:
            assert not val_ids & set(bench.sets[key].ids)
    # the ID sets are the ID task's own splits restricted to the ID classes
    train_labels = np.asarray(id_task.split("train").labels)
    assert len(bench.sets["id/train"].ids) == int(np.isin(train_labels, id_label_values).sum())


def write_card(tmp_path, **changes) -> str:
    card = {"name": "tiny-ood", "id": {"task": "opencv-digits", "classes": ["0", "1", "2"]},
            "val": {"name": "textures-val", "task": "skimage-textures", "split": "val"},
            "near": [{"name": "held-out", "task": "opencv-digits", "classes": ["7", "8"], "held_out": True}],
            "far": [{"name": "textures", "task": "skimage-textures", "split": "test"}], "counts": {}}
    card.update(changes)
    path = tmp_path / "tiny-ood.yaml"
    path.write_text(yaml.safe_dump(card), encoding="utf-8")
    return str(path)


def test_a_card_file_builds_and_its_counts_are_checked(tmp_path):
    bench = create_benchmark(write_card(tmp_path), check_counts=False)
    assert bench.counts == {"id/train": 600, "id/val": 150, "id/test": 750, "val/textures-val": 192,
                            "near/held-out": 500, "far/textures": 384}
    with pytest.raises(UnirepError, match="set sizes .card, built. differ"):
        create_benchmark(write_card(tmp_path, counts={"id/train": 1}))


@pytest.mark.parametrize(("changes", "message"), [
    ({"id": {"task": "no-such-task"}}, "unknown task 'no-such-task'"),
    ({"far": [{"name": "f", "task": "skimage-textures", "classes": ["velvet"]}]}, "does not have"),
    ({"near": [{"name": "n", "task": "opencv-digits", "classes": ["2", "7"], "held_out": True}]},
     r"shares held-out classes \['2'\]"),
    ({"near": [{"name": "n", "task": "opencv-digits", "classes": ["7"]}]}, "mark it held_out: true"),
    ({"far": [{"name": "f", "task": "sklearn-digits", "classes": ["1", "9"]}]}, r"shares classes \['1'\]"),
    ({"far": [{"name": "f", "task": "skimage-textures", "count": 0}]}, "positive integer"),
    ({"far": [{"name": "f", "task": "skimage-textures", "split": "val"}]}, "share 192 examples"),
    ({"near": [], "far": []}, "at least one near or far"),
    ({"far": [{"name": "f", "task": "skimage-textures", "colour": "red"}]}, r"unknown key\(s\) \['colour'\]"),
])
def test_bad_cards_are_refused_with_one_line(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message) as caught:
        create_benchmark(write_card(tmp_path, **changes), check_counts=False)
    assert "\n" not in str(caught.value)


def test_unknown_benchmark_names_the_shipped_ones():
    with pytest.raises(UnknownNameError, match="fashion-mnist-ood"):
        load_benchmark_card("no-such-benchmark")
