"""OoD benchmarks as data: a card (`tasks/ood/<name>.yaml`) names an in-distribution (ID) task, optionally a subset of
its classes, and OoD sets grouped as *near* (semantic shift within the domain, e.g. the ID task's held-out classes)
and *far* (other datasets), plus one *validation* OoD set that only chooses a score's hyperparameters and is never
a test OoD set (OpenOOD v1.5's layout).

Every set is a selection of one registered task's split (optionally some of its classes, optionally a seeded
stratified subsample), so its features come from the same feature cache as `unirep eval`'s. The exact example ids
of every set are published in `tasks/ood/manifests/<name>.json` (rewrite with `python -m
unirep.ood.write_manifests`); the card's `counts` is the split table its test asserts (a `null` count is a set
whose published size is unknown: its size is the data's, recorded but not asserted). Cards of benchmarks whose data a
networked user downloads (OpenOOD v1.5's) live in `tasks/ood/standard/` and load by name like the offline ones.

Card:

    name: fashion-mnist-ood
    id: {task: fashion-mnist, classes: [T-shirt/top, Trouser, ...]}     # classes: default all
    val: {name: textile, task: textile-defects, split: val}
    near:
      - {name: held-out-classes, task: fashion-mnist, split: test, classes: [Coat, ...], held_out: true}
    far:
      - {name: animal-silhouettes, task: animal-mnist, split: test, count: 2000}
    counts: {id/train: 3000, id/val: 600, id/test: 6000, val/textile: 250, near/held-out-classes: 4000, ...}

Refused with one line: an unknown task, a set naming classes its task does not have, an empty set, an OoD set that
shares classes or examples with the ID task (allowed from the ID task itself only as `held_out: true` with classes
outside the ID classes), a validation set that shares examples with a test set.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from unirep.errors import ConfigError, DataError, UnknownNameError, yaml_problem
from unirep.fileio import sha256_json
from unirep.resources import TASKS_DIR
from unirep.tasks import SPLITS, Task, create_task
from unirep.tasks.base import stratified_take

BENCHMARKS_DIR = TASKS_DIR / "ood"
MANIFESTS_DIR = BENCHMARKS_DIR / "manifests"
# Benchmarks whose data a networked user downloads (e.g. OpenOOD v1.5's), kept apart from the offline ones.
SUITE_DIRS = {"offline": BENCHMARKS_DIR, "standard": BENCHMARKS_DIR / "standard"}
GROUPS = ("near", "far")  # the test OoD groups; "val" is the hyperparameter set
ID_SPLITS = SPLITS  # ID train fits the scores' statistics, ID val selects (with the val OoD set), ID test scores
_SET_KEYS = {"name", "task", "split", "classes", "held_out", "count"}
_CARD_KEYS = {"name", "description", "id", "val", "near", "far", "counts", "seed", "source", "licence"}


@dataclass(frozen=True)
class SetSpec:
    """One OoD set: examples of `task`'s `split`, of `classes` (default all), `count` of them (default all)."""

    name: str
    task: str
    split: str = "test"
    classes: tuple[str, ...] = ()
    held_out: bool = False
    count: int | None = None

    @classmethod
    def from_raw(cls, raw: object, where: str) -> SetSpec:
        if not isinstance(raw, dict) or "name" not in raw or "task" not in raw:
            raise ConfigError(f"{where}: an OoD set is a mapping with at least name and task, e.g. {{name: digits, "
                              f"task: opencv-digits, split: test}}; got {raw!r}")
        unknown = sorted(set(raw) - _SET_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown} in OoD set {raw['name']!r}; allowed: "
                              f"{sorted(_SET_KEYS)}")
        if raw.get("split", "test") not in SPLITS:
            raise ConfigError(f"{where}: OoD set {raw['name']!r} has split {raw['split']!r}; use one of {SPLITS}")
        count = raw.get("count")
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ConfigError(f"{where}: OoD set {raw['name']!r} has count {count!r}; give a positive integer")
        return cls(name=str(raw["name"]), task=str(raw["task"]), split=raw.get("split", "test"),
                   classes=tuple(str(c) for c in raw.get("classes", ())), held_out=bool(raw.get("held_out", False)),
                   count=count)


@dataclass(frozen=True)
class BenchmarkCard:
    """The published description of an OoD benchmark, read from `tasks/ood/<name>.yaml`."""

    name: str
    description: str
    id_task: str
    id_classes: tuple[str, ...]
    val: SetSpec
    near: tuple[SetSpec, ...]
    far: tuple[SetSpec, ...]
    counts: dict[str, int | None]  # None: a set whose size is taken from the data, not asserted (unpublished)
    seed: int = 0
    source: str = ""
    licence: str = ""
    path: str = ""

    @property
    def test_sets(self) -> tuple[tuple[str, SetSpec], ...]:
        return tuple(("near", s) for s in self.near) + tuple(("far", s) for s in self.far)

    @property
    def tasks(self) -> list[str]:
        names = [self.id_task, self.val.task, *(s.task for _, s in self.test_sets)]
        return list(dict.fromkeys(names))

    @classmethod
    def from_yaml(cls, path: str | Path) -> BenchmarkCard:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"OoD benchmark card {path} is not valid YAML ({yaml_problem(exc)}): fix the "
                              "file") from None
        except OSError as exc:
            raise ConfigError(f"OoD benchmark card {path} cannot be read ({exc.strerror or exc})") from None
        where = f"OoD benchmark card {path}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must hold a YAML mapping (name, id, val, near, far, counts)")
        unknown = sorted(set(raw) - _CARD_KEYS)
        missing = sorted({"name", "id", "val", "counts"} - set(raw))
        if unknown or missing:
            raise ConfigError(f"{where}: unknown key(s) {unknown}, missing key(s) {missing}; allowed keys: "
                              f"{sorted(_CARD_KEYS)}")
        id_part = raw["id"]
        if not isinstance(id_part, dict) or "task" not in id_part or set(id_part) - {"task", "classes"}:
            raise ConfigError(f"{where}: id must be a mapping {{task: NAME, classes: [...]}} (classes optional)")
        near = tuple(SetSpec.from_raw(s, where) for s in raw.get("near") or [])
        far = tuple(SetSpec.from_raw(s, where) for s in raw.get("far") or [])
        if not near and not far:
            raise ConfigError(f"{where}: name at least one near or far OoD set")
        names = [s.name for s in (*near, *far)] + [SetSpec.from_raw(raw["val"], where).name]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: OoD set names must be unique, got {names}")
        return cls(name=str(raw["name"]), description=str(raw.get("description", "")), id_task=str(id_part["task"]),
                   id_classes=tuple(str(c) for c in id_part.get("classes", ())),
                   val=SetSpec.from_raw(raw["val"], where), near=near, far=far,
                   counts={str(k): None if v is None else int(v) for k, v in raw["counts"].items()},
                   seed=int(raw.get("seed", 0)),
                   source=str(raw.get("source", "")), licence=str(raw.get("licence", "")), path=str(path))


def list_benchmarks(pattern: str = "*", suite: str = "offline") -> list[str]:
    """Shipped benchmarks: `offline` (tasks/ood/, embedded data) or `standard` (tasks/ood/standard/, data a
    networked user downloads)."""
    return sorted(p.stem for p in SUITE_DIRS[suite].glob(f"{pattern}.yaml"))


def load_benchmark_card(name: str) -> BenchmarkCard:
    """The card of `name`: a shipped benchmark (offline or standard), or a path to a card YAML file."""
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
    else:  # offline first, then the standard (networked) ones
        path = next((d / f"{name}.yaml" for d in SUITE_DIRS.values() if (d / f"{name}.yaml").is_file()),
                    BENCHMARKS_DIR / f"{name}.yaml")
    if not path.is_file():
        shipped = [*list_benchmarks(), *list_benchmarks(suite="standard")]
        raise UnknownNameError(f"unknown OoD benchmark {name!r}: shipped ones are {', '.join(shipped)} "
                               "(or give the path of a card .yaml)")
    return BenchmarkCard.from_yaml(path)


@dataclass(frozen=True)
class SetSelection:
    """Rows of one task split that make up a set, and their labels (ID: remapped to 0..len(id_classes)-1)."""

    task: str
    split: str
    rows: np.ndarray
    ids: tuple[str, ...]
    labels: np.ndarray


@dataclass
class OodBenchmark:
    """A built benchmark: the ID sets (`id/train`, `id/val`, `id/test`) and the OoD sets (`val/<name>`,
    `near/<name>`, `far/<name>`), each a selection of rows of one cached task split."""

    card: BenchmarkCard
    id_classes: tuple[str, ...]
    sets: dict[str, SetSelection]
    task_digests: dict[str, str] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict, repr=False)  # the built tasks the sets select from

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def counts(self) -> dict[str, int]:
        return {key: len(s.ids) for key, s in self.sets.items()}

    def test_set_keys(self) -> list[str]:
        return [f"{group}/{spec.name}" for group, spec in self.card.test_sets]

    @functools.cached_property
    def digest(self) -> str:
        return sha256_json({"benchmark": self.name, "tasks": self.task_digests,
                            "sets": {k: list(s.ids) for k, s in self.sets.items()}})

    def manifest(self) -> dict:
        return {"benchmark": self.name, "seed": self.card.seed, "tasks": self.task_digests, "counts": self.counts,
                "digest": self.digest, "id_classes": list(self.id_classes),
                "sets": {key: {"task": s.task, "split": s.split, "ids": list(s.ids)} for key, s in self.sets.items()}}

    def summary(self) -> dict:
        """What a record stores: enough to check the benchmark without the id lists."""
        return {"benchmark": self.name, "digest": self.digest, "counts": self.counts, "tasks": self.task_digests,
                "id_classes": list(self.id_classes)}


def create_benchmark(name: str, check_counts: bool = True) -> OodBenchmark:
    """Build benchmark `name` (a shipped card name or a card path) from its tasks' published splits.

    Example:
        >>> bench = create_benchmark("fashion-mnist-ood")
        >>> bench.counts["near/held-out-classes"]
        4000
    """
    card = load_benchmark_card(name)
    tasks = {}
    for task_name in card.tasks:
        try:
            tasks[task_name] = create_task(task_name)
        except UnknownNameError as exc:
            raise ConfigError(f"OoD benchmark card {card.path}: {exc}") from None
    bench = _build(card, tasks)
    asserted = {k: v for k, v in card.counts.items() if v is not None}
    built = {k: v for k, v in bench.counts.items() if k not in card.counts or card.counts[k] is not None}
    if check_counts and (built != asserted or set(bench.counts) != set(card.counts)):
        differ = {k: (card.counts.get(k, "absent"), bench.counts.get(k, "absent"))
                  for k in sorted({*card.counts, *bench.counts})
                  if k not in card.counts or k not in bench.counts
                  or (card.counts[k] is not None and card.counts[k] != bench.counts[k])}
        raise DataError(f"OoD benchmark {card.name!r}: set sizes (card, built) differ: {differ}; the data or the "
                        f"card changed: fix counts in {card.path}")
    return bench


def _build(card: BenchmarkCard, tasks: dict[str, Task]) -> OodBenchmark:
    id_task = tasks[card.id_task]
    _ = id_task.manifest  # loads the data first: a card whose class names come from the data has them only then
    id_classes = card.id_classes or tuple(id_task.card.classes)
    _check_classes(card, id_task, id_classes, "id")
    sets: dict[str, SetSelection] = {}
    for split in ID_SPLITS:
        sets[f"id/{split}"] = _select(id_task, split, id_classes, None, card.seed, relabel=True)
    specs = [("val", card.val), *card.test_sets]
    for group, spec in specs:
        task = tasks[spec.task]
        classes = spec.classes or tuple(task.card.classes)
        _check_classes(card, task, classes, f"{group}/{spec.name}")
        _check_semantic_overlap(card, spec, group, classes, id_classes)
        selection = _select(task, spec.split, classes, spec.count, card.seed, relabel=False)
        if not selection.ids:
            raise DataError(f"OoD benchmark card {card.path}: OoD set {group}/{spec.name} is empty ({spec.task} "
                            f"{spec.split} split, classes {list(classes)}): name classes with examples")
        sets[f"{group}/{spec.name}"] = selection
    _check_disjoint(card, sets)
    return OodBenchmark(card, id_classes, sets, {name: tasks[name].manifest.digest for name in card.tasks}, tasks)


def _check_classes(card: BenchmarkCard, task: Task, classes: tuple[str, ...], where: str) -> None:
    unknown = [c for c in classes if c not in task.card.classes]
    if unknown:
        raise ConfigError(f"OoD benchmark card {card.path}: {where} names class(es) {unknown} that task "
                          f"{task.name!r} does not have (its classes: {list(task.card.classes)})")


def _check_semantic_overlap(card: BenchmarkCard, spec: SetSpec, group: str, classes: tuple[str, ...],
                            id_classes: tuple[str, ...]) -> None:
    """An OoD set must hold no ID class: from the ID task only as a held-out-class split, from other tasks only
    without a class of the same name (e.g. two digit datasets share classes; that is covariate, not semantic,
    shift)."""
    shared = sorted(set(classes) & set(id_classes))
    where = f"OoD benchmark card {card.path}: OoD set {group}/{spec.name}"
    if spec.task == card.id_task and not spec.held_out:
        raise ConfigError(f"{where} is drawn from the ID task {card.id_task!r}: mark it held_out: true and give it "
                          "classes outside the ID classes, or draw it from another task")
    if shared:
        kind = "held-out classes" if spec.held_out else "classes"
        raise ConfigError(f"{where} shares {kind} {shared} with the ID task: an OoD set must hold none of the ID "
                          "classes; list other classes under its classes:")


def _check_disjoint(card: BenchmarkCard, sets: dict[str, SetSelection]) -> None:
    """No example in two sets (same task and split, overlapping rows): ID vs OoD, and val OoD vs test OoD."""
    keys = list(sets)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            if sets[a].task != sets[b].task or sets[a].split != sets[b].split:
                continue
            if a.startswith("id/") and b.startswith("id/"):
                continue
            shared = np.intersect1d(sets[a].rows, sets[b].rows)
            if shared.size:
                raise ConfigError(f"OoD benchmark card {card.path}: sets {a} and {b} share {shared.size} examples of "
                                  f"{sets[a].task} {sets[a].split}: draw them from other splits or classes")


def _select(task: Task, split: str, classes: tuple[str, ...], count: int | None, seed: int,
            relabel: bool) -> SetSelection:
    ids = task.manifest.splits[split]
    labels = np.asarray(task.split(split).labels)
    if labels.ndim != 1:
        raise ConfigError(f"task {task.name!r} is multi-label: OoD benchmarks take single-label tasks")
    wanted = np.array([task.card.classes.index(c) for c in classes])
    rows = np.flatnonzero(np.isin(labels, wanted))
    if count is not None:
        if count > len(rows):
            raise DataError(f"OoD set of task {task.name!r} asks for {count} examples of its {split} split, which has "
                            f"{len(rows)} of classes {list(classes)}: lower count")
        rows = stratified_take(labels, rows, count, np.random.default_rng(seed))
    out_labels = labels[rows]
    if relabel:  # ID labels become positions in the benchmark's ID class list
        position = {int(c): i for i, c in enumerate(wanted)}
        out_labels = np.array([position[int(y)] for y in labels[rows]], dtype=np.int64)
    return SetSelection(task.name, split, rows, tuple(ids[r] for r in rows), np.asarray(out_labels, dtype=np.int64))


__all__ = ["BENCHMARKS_DIR", "BenchmarkCard", "GROUPS", "MANIFESTS_DIR", "OodBenchmark", "SetSelection", "SetSpec",
           "create_benchmark", "list_benchmarks", "load_benchmark_card"]
