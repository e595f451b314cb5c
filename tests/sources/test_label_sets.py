"""Label sets: the Fashion-MNIST hierarchy, k-means determinism against sklearn, the random control, bad input."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.cluster import KMeans

from unirep.backbones import create_backbone
from unirep.errors import ConfigError, DataError, UnknownNameError
from unirep.sources.config import LabelSetConfig
from unirep.sources.label_sets import (
    HIERARCHIES_DIR,
    VARIATIONS,
    LabelSet,
    VariationContext,
    build_label_set,
    build_label_sets,
    canonical_groups,
    random_groups,
)
from unirep.tasks import create_task, load_card

FASHION = load_card("fashion-mnist").classes


def fashion_context() -> VariationContext:
    # Hierarchy label sets read only the class names; no image is touched.
    return VariationContext("fashion-mnist", FASHION, SimpleNamespace(labels=np.arange(10)), 32)


def partition(assignment) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for cls, g in enumerate(assignment):
        groups.setdefault(int(g), set()).add(cls)
    return {frozenset(v) for v in groups.values()}


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


@pytest.fixture(scope="module")
def digits_context() -> VariationContext:
    task = create_task("sklearn-digits")
    return VariationContext(task.name, task.card.classes, task.split("train"), 16)


def test_registry_lists_every_kind():
    assert VARIATIONS.list() == ["hierarchy", "kmeans", "original", "random"]
    with pytest.raises(UnknownNameError, match="did you mean kmeans"):
        build_label_set(LabelSetConfig(kind="kmean"), fashion_context())


def test_fashion_mnist_hierarchy_levels():
    level1 = build_label_set(LabelSetConfig(kind="hierarchy", level=1), fashion_context())
    groups = {k: set(v) for k, v in level1.groups(FASHION).items()}
    assert groups == {
        "tops": {"T-shirt/top", "Pullover", "Shirt", "Coat"},
        "bottoms": {"Trouser"},
        "dresses": {"Dress"},
        "footwear": {"Sandal", "Sneaker", "Ankle boot"},
        "bags": {"Bag"},
    }
    assert level1.name == "hierarchy-l1" and level1.provenance["file"].endswith("fashion-mnist.yaml")
    level2 = build_label_set(LabelSetConfig(kind="hierarchy", level=2), fashion_context())
    assert {k: set(v) for k, v in level2.groups(FASHION).items()} == {
        "clothing": {"T-shirt/top", "Pullover", "Shirt", "Coat", "Trouser", "Dress"},
        "shoes-and-bags": {"Sandal", "Sneaker", "Ankle boot", "Bag"},
    }
    # Chains end at level 2: deeper levels stop at the top (a WordNet-style cut).
    level5 = build_label_set(LabelSetConfig(kind="hierarchy", level=5, name="top"), fashion_context())
    assert level5.class_to_group == level2.class_to_group
    np.testing.assert_array_equal(level1.relabel(np.array([0, 4, 9, 8])), [0, 0, 3, 4])


def write_hierarchy(tmp_path: Path, parents: dict, task: str = "fashion-mnist") -> Path:
    import yaml

    path = tmp_path / "h.yaml"
    path.write_text(yaml.safe_dump({"task": task, "parents": parents}))
    return path


def fashion_parents() -> dict:
    import yaml

    return dict(yaml.safe_load((HIERARCHIES_DIR / "fashion-mnist.yaml").read_text())["parents"])


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p.update({"Jumper": "tops"}), "unknown class.*Jumper"),
    (lambda p: p.pop("Bag"), "no parent for class.*Bag"),
    (lambda p: p.update({"clothing": "tops"}), "cycle"),
])
def test_bad_hierarchies_fail_in_one_line(tmp_path, mutate, message):
    parents = fashion_parents()
    mutate(parents)
    spec = LabelSetConfig(kind="hierarchy", hierarchy=str(write_hierarchy(tmp_path, parents)), level=2)
    with pytest.raises(ConfigError, match=message) as exc:
        build_label_set(spec, fashion_context())
    one_line(exc)


def test_hierarchy_for_another_task_or_missing_file(tmp_path):
    other = LabelSetConfig(kind="hierarchy", hierarchy=str(write_hierarchy(tmp_path, fashion_parents(), "cifar10")))
    with pytest.raises(ConfigError, match="for task 'cifar10'") as exc:
        build_label_set(other, fashion_context())
    one_line(exc)
    with pytest.raises(ConfigError, match="not found") as exc:
        build_label_set(LabelSetConfig(kind="hierarchy", hierarchy=str(tmp_path / "none.yaml")), fashion_context())
    one_line(exc)


@pytest.mark.parametrize("kind", ["kmeans", "random"])
@pytest.mark.parametrize("omega", [None, 1, 10, 11])
def test_omega_out_of_range(kind, omega, digits_context):
    with pytest.raises(ConfigError, match=r"omega=.* must be >= 2 and < 10") as exc:
        build_label_set(LabelSetConfig(kind=kind, omega=omega), digits_context)
    one_line(exc)


def test_kmeans_is_deterministic_and_matches_sklearn(digits_context):
    spec = LabelSetConfig(kind="kmeans", omega=3, features="raw-pixels", seed=7)
    first = build_label_set(spec, digits_context)
    again = build_label_set(spec, digits_context)
    assert first.class_to_group == again.class_to_group and first.name == "kmeans-w3"
    # Independent computation: class means of raw pixels through the backbone's own transform, then sklearn.
    backbone = create_backbone("raw-pixels", input_size=16)
    transform = backbone.data_config.transform()
    images = digits_context.train_images
    pixels = np.stack([transform(images[i][0]).flatten().numpy() for i in range(len(images))])
    labels = np.asarray(images.labels)
    means = np.stack([pixels[labels == c].mean(0) for c in range(10)])
    expected = KMeans(n_clusters=3, n_init=10, random_state=7).fit_predict(means)
    assert partition(first.class_to_group) == partition(expected)
    assert first.class_to_group == canonical_groups(expected)
    assert first.provenance == {"omega": 3, "seed": 7, "features": "raw-pixels"}


def test_random_control_is_balanced_seeded_and_varies_with_seed():
    a, b, c = random_groups(10, 3, seed=0), random_groups(10, 3, seed=0), random_groups(10, 3, seed=1)
    assert a == b and a != c
    for assignment in (a, c):
        assert sorted(np.bincount(assignment).tolist()) == [3, 3, 4]
        assert assignment[0] == 0  # canonical numbering: the first class opens group 0
    # A permutation of the classes dealt round-robin: independent re-derivation.
    order = np.random.default_rng(0).permutation(10)
    expected = np.empty(10, int)
    expected[order] = np.arange(10) % 3
    assert partition(a) == partition(expected)


def test_empty_groups_and_duplicates_are_refused(digits_context):
    with pytest.raises(ConfigError, match=r"group\(s\) \['c'\] have no class") as exc:
        LabelSet("x", "hierarchy", (0, 0, 1, 1), ("a", "b", "c"))
    one_line(exc)
    with pytest.raises(ConfigError, match="one group") as exc:
        LabelSet("x", "random", (0, 0, 0), ("a",))
    one_line(exc)
    with pytest.raises(ConfigError, match="only hold letters") as exc:
        LabelSet("a.b", "original", (0, 1), ("a", "b"))
    one_line(exc)
    # A group without any training example: classes 0..4 only in the training labels.
    half = VariationContext("sklearn-digits", digits_context.classes,
                            SimpleNamespace(labels=np.repeat(np.arange(5), 3)), 16)
    with pytest.raises(DataError, match=r"group\(s\) \['5', '6', '7', '8', '9'\] have no example") as exc:
        build_label_sets([LabelSetConfig()], half)
    one_line(exc)
    with pytest.raises(ConfigError, match="appear twice") as exc:
        build_label_sets([LabelSetConfig(), LabelSetConfig()], digits_context)
    one_line(exc)
