"""OpenOOD v1.5's CIFAR-10 and ImageNet-200 benchmarks on tiny fixtures in OpenOOD's real layout (benchmark_imglist/
<benchmark>/*.txt lists of `<relative path> <label>`, images_classic/ and images_largescale/ folders) holding real
images (scikit-learn's digits, 3 per class and split): the cards name OpenOOD's own lists and sets, the benchmarks
build with the counts the fixture wrote, `unirep ood` runs end to end on them with selection on the val OoD list, and
bad lists are refused in one line (exit 2)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from sklearn.datasets import load_digits

from unirep.cli import main
from unirep.errors import DataError
from unirep.ood import create_benchmark
from unirep.ood.benchmarks import list_benchmarks, load_benchmark_card
from unirep.ood.records import load_ood_records
from unirep.tasks import base as task_base
from unirep.tasks import create_task, list_tasks, load_card

list_tasks()  # imports the adapters, which register the OpenOOD task cards
PER_CLASS = 3  # ID images per class and split
# Sizes of the fixture's OoD lists, all different so a set drawn from the wrong list shows in its count.
CIFAR_OOD_SIZES = {"val_tin": 3, "cifar100": 4, "tin": 5, "mnist": 6, "svhn": 2, "texture": 3, "places365": 4}
IMAGENET_OOD_SIZES = {"val_openimage_o": 3, "ssb_hard": 4, "ninco": 2, "inaturalist": 5, "textures": 3,
                      "openimage_o": 4}
IMAGENET_FIXTURE_CLASSES = 4  # the ImageNet-200 ID card with 4 classes, as the VTAB fixtures shrink theirs


@dataclasses.dataclass
class Fixture:
    root: Path  # the data root (UNIREP_DATA_ROOT); OpenOOD's data folder is root / "openood"
    counts: dict[str, int]
    id_labels: dict[str, dict[str, int]]  # split -> image id -> label, as written
    lists: dict[str, Path]  # list name (ID split or OoD set) -> list file

    @property
    def base(self) -> Path:
        return self.root / "openood"


DIGITS = load_digits()


def save_digit(path: Path, index: int, fmt: str = "PNG") -> None:
    """Digit `index` of scikit-learn's digits (8x8, 0..16) as a 32x32 RGB image file."""
    grey = np.kron(DIGITS.images[index] * 15.9, np.ones((4, 4))).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(path, format=fmt)


def write_list(path: Path, rows: list[tuple[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{rel} {label}\n" for rel, label in rows), encoding="utf-8")


def write_openood(root: Path, id_card, ood_card, ood_sizes: dict[str, int], folder_of) -> Fixture:
    """OpenOOD's layout for the lists the two task cards name: ID images of class k are digits k (mod 10), in
    `folder_of(split, k)`; each OoD list gets its own images (digits not used for ID)."""
    base = root / "openood"
    n_classes = id_card.num_classes
    by_class = {k: list(np.flatnonzero(DIGITS.target == k % 10)) for k in range(n_classes)}
    counts, id_labels, lists = {}, {}, {}
    for entry in id_card.extra["lists"]:
        split, rows = entry["split"], []
        for k in range(n_classes):
            for _ in range(PER_CLASS):
                index = by_class[k].pop()
                suffix = "png" if entry["images"] == "images_classic" else "JPEG"  # as OpenOOD's own files
                rel = f"{folder_of(split, k)}/{split}_{index:04d}.{suffix}"
                save_digit(base / entry["images"] / rel, index, "PNG" if suffix == "png" else "JPEG")
                rows.append((rel, k))
        write_list(base / entry["list"], rows)
        counts[f"id/{split}"] = len(rows)
        id_labels[split] = {f"{entry['images']}/{rel}": label for rel, label in rows}
        lists[split] = base / entry["list"]
    next_index = 1797
    for entry in ood_card.extra["lists"]:
        name, rows = entry["name"], []
        for _ in range(ood_sizes[name]):
            next_index -= 1
            rel = f"{name}/{entry['split']}/{next_index:04d}.png"
            save_digit(base / entry["images"] / rel, next_index)
            rows.append((rel, -1))  # OpenOOD labels OoD images -1
        write_list(base / entry["list"], rows)
        group = "val" if entry["split"] == "val" else next(
            g for g in ("near", "far") for s in getattr(BENCH_CARDS[ood_card.name], g) if s.name == name)
        counts[f"{group}/{name}"] = len(rows)
        lists[name] = base / entry["list"]
    return Fixture(root, counts, id_labels, lists)


BENCH_CARDS = {"openood-cifar10-ood": load_benchmark_card("openood-cifar10"),
               "openood-imagenet200-ood": load_benchmark_card("openood-imagenet200")}
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def fixture_card(bench: str, fixture: Fixture, folder: Path) -> str:
    """The shipped benchmark card with the fixture's counts (as VTAB cards carry `extra.fixture.counts`)."""
    raw = yaml.safe_load(Path(load_benchmark_card(bench).path).read_text(encoding="utf-8"))
    raw["counts"] = dict(fixture.counts)
    path = folder / f"{bench}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return str(path)


@pytest.fixture
def cifar(tmp_path, monkeypatch) -> tuple[Fixture, str]:
    monkeypatch.setenv("UNIREP_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("UNIREP_ALLOW_DOWNLOAD", raising=False)
    fixture = write_openood(tmp_path / "data", load_card("openood-cifar10-id"), load_card("openood-cifar10-ood"),
                            CIFAR_OOD_SIZES, lambda split, k: f"cifar10/{split}/{CIFAR10[k]}")
    return fixture, fixture_card("openood-cifar10", fixture, tmp_path)


def wnid(k: int) -> str:
    return f"n{1440764 + k:08d}"


@pytest.fixture
def imagenet(tmp_path, monkeypatch) -> tuple[Fixture, str]:
    monkeypatch.setenv("UNIREP_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("UNIREP_ALLOW_DOWNLOAD", raising=False)
    id_card = load_card("openood-imagenet200-id")
    id_card = dataclasses.replace(id_card, extra={**id_card.extra, "num_classes": IMAGENET_FIXTURE_CLASSES})
    monkeypatch.setitem(task_base._REGISTERED_CARDS, id_card.name, id_card)
    fixture = write_openood(tmp_path / "data", id_card, load_card("openood-imagenet200-ood"), IMAGENET_OOD_SIZES,
                            # train images in one folder per class, val/test flat (as ImageNet's own val folder)
                            lambda split, k: f"imagenet_1k/train/{wnid(k)}" if split == "train" else "imagenet_1k/val")
    return fixture, fixture_card("openood-imagenet200", fixture, tmp_path)


def test_cards_name_openood_v15_lists_and_sets():
    """What OpenOOD v1.5's evaluator and configs name (see the cards' `source`), set by set."""
    assert list_benchmarks(suite="standard") == ["openood-cifar10", "openood-imagenet200"]
    assert "openood-cifar10" not in list_benchmarks()  # not in the offline suite
    expected = {
        "openood-cifar10": ("val_tin", ["cifar100", "tin"], ["mnist", "svhn", "texture", "places365"]),
        "openood-imagenet200": ("val_openimage_o", ["ssb_hard", "ninco"], ["inaturalist", "textures", "openimage_o"]),
    }
    for name, (val, near, far) in expected.items():
        card = load_benchmark_card(name)
        assert (card.val.name, [s.name for s in card.near], [s.name for s in card.far]) == (val, near, far)
        assert card.val.split == "val" and all(s.split == "test" for _, s in card.test_sets)
        assert card.source.count("commit") >= 2 and "Jingkang50/OpenOOD" in card.source
    lists = {e["name"]: (e["list"], e["images"]) for e in load_card("openood-imagenet200-ood").extra["lists"]}
    assert lists["textures"] == ("benchmark_imglist/imagenet/test_textures.txt", "images_classic")
    assert lists["val_openimage_o"][0] == "benchmark_imglist/imagenet200/val_openimage_o.txt"
    cifar_lists = [e["list"] for e in load_card("openood-cifar10-ood").extra["lists"]]
    assert cifar_lists == [f"benchmark_imglist/cifar10/{f}.txt" for f in
                           ("val_tin", "test_cifar100", "test_tin", "test_mnist", "test_svhn", "test_texture",
                            "test_places365")]
    assert [e["list"].split("/")[-1] for e in load_card("openood-imagenet200-id").extra["lists"]] == [
        "train_imagenet200.txt", "val_imagenet200.txt", "test_imagenet200.txt"]
    assert load_benchmark_card("openood-imagenet200").counts["id/test"] == 9000


def test_cifar10_benchmark_builds_with_the_fixture_counts(cifar):
    fixture, card = cifar
    bench = create_benchmark(card)
    assert bench.counts == fixture.counts
    assert bench.counts["id/train"] == 10 * PER_CLASS and bench.counts["near/tin"] == CIFAR_OOD_SIZES["tin"]
    assert bench.id_classes == tuple(CIFAR10)
    for split in ("train", "val", "test"):  # every ID image with the label its list gives, nothing resampled
        selection = bench.sets[f"id/{split}"]
        assert dict(zip(selection.ids, selection.labels.tolist(), strict=True)) == fixture.id_labels[split]
    tin = bench.sets["near/tin"]
    assert all(i.startswith("images_classic/tin/test/") for i in tin.ids) and tin.split == "test"
    assert bench.sets["val/val_tin"].split == "val"
    image, label = bench.tasks["openood-cifar10-id"].split("test")[0]
    assert image.size == (32, 32) and image.mode == "RGB" and 0 <= label < 10
    # the shipped card, by name: its null counts (unpublished sizes) take the lists' sizes, recorded, not asserted
    shipped = create_benchmark("openood-cifar10")
    assert shipped.counts == fixture.counts and shipped.digest == bench.digest


def test_imagenet200_benchmark_builds_with_wordnet_class_names(imagenet):
    fixture, card = imagenet
    bench = create_benchmark(card)
    assert bench.counts == fixture.counts
    assert bench.id_classes == tuple(wnid(k) for k in range(IMAGENET_FIXTURE_CLASSES))
    assert all(i.startswith("images_classic/textures/") for i in bench.sets["far/textures"].ids)
    assert all(i.startswith("images_largescale/ssb_hard/") for i in bench.sets["near/ssb_hard"].ids)
    # the shipped card asserts OpenOOD's ID val/test sizes: the fixture's are refused in one line
    shipped = str(Path(load_benchmark_card("openood-imagenet200").path))
    with pytest.raises(DataError, match=r"set sizes \(card, built\) differ: .*'id/test': \(9000, 12\)"):
        create_benchmark(shipped)


def test_unirep_ood_runs_end_to_end_and_selects_on_the_val_ood_list(cifar, tmp_path):
    fixture, card = cifar
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        argv = ["ood", "raw-pixels", "--input-size", "8", "--benchmarks", card, "--scores", "msp,react",
                "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "linear.n_c=3"]
        assert main(argv) == 0
    finally:
        torch.set_num_threads(before)
    records = {r.ood_score: r for r in load_ood_records(tmp_path / "out")}
    assert sorted(records) == ["msp", "react"]
    test_sets = sorted(k for k in fixture.counts if k.split("/")[0] in ("near", "far"))
    for record in records.values():
        assert record.benchmark == "openood-cifar10"
        assert record.benchmark_manifest["counts"] == fixture.counts
        assert len(record.id_test_scores) == fixture.counts["id/test"]
        assert sorted(record.ood_test_scores) == test_sets
        assert {k: len(v) for k, v in record.ood_test_scores.items()} == {k: fixture.counts[k] for k in test_sets}
    # ReAct's percentile is chosen on the val OoD list with ID val, never on a test list
    assert records["react"].val_selection["val_ood_set"] == "val/val_tin"


def corrupt(fixture: Fixture, case: str) -> str:
    """Break the fixture's lists one way; returns the text the one-line refusal must hold."""
    if case == "bad line":
        with open(fixture.lists["train"], "a", encoding="utf-8") as handle:
            handle.write("cifar10/train/cat/no-label.png\n")
        n_lines = len(fixture.lists["train"].read_text().splitlines())
        return f"train_cifar10.txt:{n_lines}: cannot parse"
    if case == "missing images":
        rows = fixture.lists["tin"].read_text().splitlines()
        for row in rows[1:3]:
            (fixture.base / "images_classic" / row.split()[0]).unlink()
        return f"2 image(s) named in {fixture.lists['tin']} are missing under {fixture.base} (first: " \
               f"{fixture.base / 'images_classic' / rows[1].split()[0]})"
    if case == "label outside":
        rows = fixture.lists["val"].read_text().splitlines()
        rows[4] = rows[4].rsplit(" ", 1)[0] + " 10"
        fixture.lists["val"].write_text("\n".join(rows) + "\n")
        return "val_cifar10.txt:5: label 10 is outside the 10 ID classes (0..9)"
    if case == "shares ID test images":
        test_row = fixture.lists["test"].read_text().splitlines()[7]
        with open(fixture.lists["svhn"], "a", encoding="utf-8") as handle:
            handle.write(test_row.rsplit(" ", 1)[0] + " -1\n")
        return f"shares 1 image(s) with the ID test list {fixture.lists['test']} (first: images_classic/" \
               f"{test_row.split()[0]})"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["bad line", "missing images", "label outside", "shares ID test images"])
def test_bad_lists_are_refused_in_one_line_with_exit_2(cifar, tmp_path, capsys, case):
    fixture, card = cifar
    message = corrupt(fixture, case)
    with pytest.raises(DataError) as caught:
        create_benchmark(card)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    argv = ["ood", "raw-pixels", "--input-size", "8", "--benchmarks", card, "--scores", "msp",
            "--out", str(tmp_path / "bad"), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad" / "ood-records").exists()


def test_absent_data_names_openoods_download_script(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIREP_DATA_ROOT", str(tmp_path / "empty"))
    monkeypatch.delenv("UNIREP_ALLOW_DOWNLOAD", raising=False)
    for name in ("openood-cifar10-id", "openood-imagenet200-ood"):
        with pytest.raises(DataError) as caught:
            create_task(name).split("test")
        text = str(caught.value)
        assert "scripts/download/download.py" in text and str(tmp_path / "empty" / "openood") in text
        assert "\n" not in text
