"""Label sets: the source problem's own classes and its *source-problem variations* (Tamaazousti et al.).

A variation regroups the specific classes into coarser groups; each label set trains one network (MulDiP-Net)
or one head of a shared trunk (multi-task). Variations come from a hierarchy file (class -> coarser class,
possibly several levels), from k-means on class-mean features (deterministic for a seed), or from a random
regrouping (the control that shows whether the *semantics* of a grouping matter).

Builders are registered in VARIATIONS by the `kind` a config names:

    label_sets:
      - {kind: original}
      - {kind: hierarchy, level: 1}                     # tasks/hierarchies/<task>.yaml by default
      - {kind: kmeans, omega: 4, features: raw-pixels}  # or any backbone name create_backbone knows
      - {kind: random, omega: 4}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from unirep.errors import ConfigError, DataError, yaml_problem
from unirep.fileio import sha256_file
from unirep.registry import Registry
from unirep.tasks.base import CARDS_DIR, ImageSet

HIERARCHIES_DIR = CARDS_DIR / "hierarchies"
# Label-set names become module names (one head per label set) and file names: keep them plain.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class LabelSet:
    """A grouping of the source task's classes: `class_to_group[c]` is the group of class c.

    Attributes:
        name: unique within a run (names the head and the network).
        kind: the VARIATIONS entry that built it ("original", "hierarchy", "kmeans", "random").
        class_to_group: one group index per source class, groups numbered 0..num_groups-1.
        group_names: one name per group.
        provenance: how it was made (file and hash, level, omega, seed, features), stored in checkpoints.
    """

    name: str
    kind: str
    class_to_group: tuple[int, ...]
    group_names: tuple[str, ...]
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        if not NAME_PATTERN.match(self.name):
            raise ConfigError(f"label set name {self.name!r} may only hold letters, digits, '-' and '_'")
        used = set(self.class_to_group)
        empty = [self.group_names[g] for g in range(len(self.group_names)) if g not in used]
        if empty or max(used, default=-1) >= len(self.group_names):
            raise ConfigError(f"label set {self.name!r}: group(s) {empty} have no class; every group needs one")
        if self.num_groups < 2:
            raise ConfigError(f"label set {self.name!r} puts every class in one group: a variation needs >= 2 groups")

    @property
    def num_groups(self) -> int:
        return len(self.group_names)

    def relabel(self, labels: np.ndarray) -> np.ndarray:
        """Class indices -> group indices."""
        return np.asarray(self.class_to_group, dtype=np.int64)[np.asarray(labels, dtype=np.int64)]

    def check_examples(self, labels: np.ndarray, split: str) -> None:
        """Raise DataError when a group has no example in `labels` (class indices of a training split)."""
        counts = np.bincount(self.relabel(labels), minlength=self.num_groups)
        empty = [self.group_names[g] for g in np.flatnonzero(counts == 0)]
        if empty:
            raise DataError(f"label set {self.name!r}: group(s) {empty[:5]} have no example in the {split} split; "
                            f"raise data.{split}_size or drop classes from the grouping")

    def groups(self, classes: Sequence[str]) -> dict[str, list[str]]:
        """Group name -> its classes (for people reading a checkpoint)."""
        out: dict[str, list[str]] = {g: [] for g in self.group_names}
        for cls, g in zip(classes, self.class_to_group, strict=True):
            out[self.group_names[g]].append(cls)
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> LabelSet:
        return cls(name=raw["name"], kind=raw["kind"], class_to_group=tuple(raw["class_to_group"]),
                   group_names=tuple(raw["group_names"]), provenance=dict(raw.get("provenance", {})))


def canonical_groups(assignment: Sequence[int]) -> tuple[int, ...]:
    """Renumber groups by their first class, so equal partitions get equal labels whatever the algorithm's ids."""
    order: dict[int, int] = {}
    for g in assignment:
        order.setdefault(int(g), len(order))
    return tuple(order[int(g)] for g in assignment)


@dataclass
class VariationContext:
    """What builders may use: the source task's classes and its training examples."""

    task: str
    classes: tuple[str, ...]
    train_images: ImageSet
    input_size: int

    @property
    def train_labels(self) -> np.ndarray:
        return np.asarray(self.train_images.labels)


VariationBuilder = Callable[..., LabelSet]
VARIATIONS: Registry[VariationBuilder] = Registry("label-set kind")
register_variation = VARIATIONS.register


def build_label_set(spec, ctx: VariationContext) -> LabelSet:
    """Build one label set from its config entry (`unirep.sources.config.LabelSetConfig`)."""
    return VARIATIONS.get(spec.kind)(spec, ctx)


def build_label_sets(specs: Sequence, ctx: VariationContext) -> list[LabelSet]:
    """All label sets of a run, names unique, each with training examples in every group."""
    label_sets = [build_label_set(spec, ctx) for spec in specs]
    names = [ls.name for ls in label_sets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"label set name(s) {duplicates} appear twice: give each entry its own `name`")
    for label_set in label_sets:
        label_set.check_examples(ctx.train_labels, "train")
    return label_sets


def check_omega(name: str, omega: int | None, num_classes: int) -> int:
    if omega is None or not 2 <= int(omega) < num_classes:
        raise ConfigError(f"label set {name!r}: omega={omega} must be >= 2 and < {num_classes} (the source task's "
                          "number of classes); set label_sets.<i>.omega")
    return int(omega)


@register_variation("original")
def original_label_set(spec, ctx: VariationContext) -> LabelSet:
    """The source task's own classes."""
    return LabelSet(spec.name or "original", "original", tuple(range(len(ctx.classes))), ctx.classes,
                    {"task": ctx.task})


@register_variation("hierarchy")
def hierarchy_label_set(spec, ctx: VariationContext) -> LabelSet:
    """Each class's ancestor `spec.level` steps up a hierarchy file (MuCaLe-Net's basic-level classes)."""
    path = Path(spec.hierarchy) if spec.hierarchy else HIERARCHIES_DIR / f"{ctx.task}.yaml"
    parents = read_hierarchy(path, ctx.classes, ctx.task)
    if spec.level < 1:
        raise ConfigError(f"hierarchy level must be >= 1 (1 = each class's parent), got {spec.level}")
    ancestors = [ancestor(parents, cls, spec.level) for cls in ctx.classes]
    group_names = tuple(dict.fromkeys(ancestors))
    assignment = tuple(group_names.index(a) for a in ancestors)
    name = spec.name or f"hierarchy-l{spec.level}"
    if len(group_names) == len(ctx.classes):
        raise ConfigError(f"label set {name!r}: level {spec.level} of {path} gives every class its own group; "
                          "choose a coarser level")
    return LabelSet(name, "hierarchy", assignment, group_names,
                    {"file": str(path), "sha256": sha256_file(path), "level": spec.level})


def read_hierarchy(path: Path, classes: Sequence[str], task: str | None = None) -> dict[str, str]:
    """The child -> parent mapping of a hierarchy YAML (`parents:`), checked against the task's classes.

    Keys are the task's classes and, for deeper levels, intermediate groups; every class needs a parent, and a
    key that is neither a class nor a group named as some parent is a typo (an unknown class).
    """
    if not path.is_file():
        raise ConfigError(f"hierarchy file {str(path)!r} not found: write one (see tasks/hierarchies/) or set "
                          "label_sets.<i>.hierarchy")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"hierarchy file {path} is not valid YAML ({yaml_problem(exc)}): fix the file") from None
    if isinstance(raw, dict) and raw.get("task") not in (None, task):
        raise ConfigError(f"hierarchy file {path} is for task {raw['task']!r}, not {task!r}: give the file of "
                          f"{task!r} in label_sets.<i>.hierarchy")
    parents = raw.get("parents") if isinstance(raw, dict) else None
    if not isinstance(parents, dict) or not parents:
        raise ConfigError(f"hierarchy file {path} needs a `parents:` mapping class -> coarser class")
    parents = {str(k): str(v) for k, v in parents.items()}
    missing = [c for c in classes if c not in parents]
    if missing:
        raise ConfigError(f"hierarchy file {path} gives no parent for class(es) {missing[:5]}: every class needs one")
    unknown = sorted(set(parents) - set(classes) - set(parents.values()))
    if unknown:
        raise ConfigError(f"hierarchy file {path} names unknown class(es) {unknown[:5]}: the task's classes are "
                          f"{list(classes)}")
    for cls in classes:
        ancestor(parents, cls, len(parents) + 1, where=path)  # raises on a cycle
    return parents


def ancestor(parents: dict[str, str], cls: str, level: int, where: Path | None = None) -> str:
    """`cls`'s ancestor `level` steps up; a chain that ends earlier stops at its top (a WordNet-style cut)."""
    node, seen = cls, {cls}
    for _ in range(level):
        if node not in parents:
            break
        node = parents[node]
        if node in seen:
            raise ConfigError(f"hierarchy file {where}: {cls!r} is its own ancestor (cycle through {node!r})")
        seen.add(node)
    return node


@register_variation("kmeans")
def kmeans_label_set(spec, ctx: VariationContext) -> LabelSet:
    """k-means (k = omega, seeded) of class-mean features of `spec.features` (a backbone name, e.g. raw-pixels)."""
    name = spec.name or f"kmeans-w{spec.omega}"
    omega = check_omega(name, spec.omega, len(ctx.classes))
    means = class_mean_features(spec.features, ctx)
    assignment = kmeans_groups(means, omega, spec.seed)
    return LabelSet(name, "kmeans", assignment, tuple(f"cluster-{g}" for g in range(omega)),
                    {"omega": omega, "seed": spec.seed, "features": spec.features})


def kmeans_groups(class_means: np.ndarray, omega: int, seed: int) -> tuple[int, ...]:
    """Cluster ids (canonical order) of each class mean; deterministic for `seed`."""
    from sklearn.cluster import KMeans

    means = np.asarray(class_means, dtype=np.float64)
    if len(np.unique(means, axis=0)) < omega:
        raise DataError(f"k-means into omega={omega} groups needs >= {omega} distinct class means, got "
                        f"{len(np.unique(means, axis=0))}: choose a smaller omega or other features")
    labels = KMeans(n_clusters=omega, n_init=10, random_state=seed).fit_predict(means)
    return canonical_groups(labels)


def class_mean_features(features: str, ctx: VariationContext) -> np.ndarray:
    """(classes, D) mean feature of each class over the training examples, from backbone `features`."""
    from unirep.backbones import create_backbone
    from unirep.features import ExtractionSettings, extract_features

    backbone = create_backbone(features, input_size=ctx.input_size)
    extracted = extract_features(backbone, ctx.train_images, ExtractionSettings(),
                                 description=f"class means ({features})")
    labels = ctx.train_labels
    missing = sorted(set(range(len(ctx.classes))) - set(np.unique(labels).tolist()))
    if missing:
        raise DataError(f"k-means label set: class(es) {[ctx.classes[m] for m in missing[:5]]} have no training "
                        "example to average; raise data.train_size")
    return np.stack([extracted.features[labels == c].mean(axis=0) for c in range(len(ctx.classes))])


@register_variation("random")
def random_label_set(spec, ctx: VariationContext) -> LabelSet:
    """A random balanced regrouping into omega groups: the control for the semantic variations."""
    name = spec.name or f"random-w{spec.omega}"
    omega = check_omega(name, spec.omega, len(ctx.classes))
    assignment = random_groups(len(ctx.classes), omega, spec.seed)
    return LabelSet(name, "random", assignment, tuple(f"random-{g}" for g in range(omega)),
                    {"omega": omega, "seed": spec.seed})


def random_groups(num_classes: int, omega: int, seed: int) -> tuple[int, ...]:
    """Classes dealt round-robin into omega groups after a seeded shuffle: sizes differ by at most one."""
    order = np.random.default_rng(seed).permutation(num_classes)
    assignment = np.empty(num_classes, dtype=np.int64)
    assignment[order] = np.arange(num_classes) % omega
    return canonical_groups(assignment)
