"""Users' own recordings as an audio task, no code: a YAML card naming an audio folder or a CSV - the way a
bird-song team brings its clips. `unirep eval ... --task-card my-birds.yaml` (or UNIREP_TASK_DIRS) reads it through
unirep.tasks.custom, which hands cards of these formats here.

    name: my-birds
    description: Songs of our garden birds
    metric: top1                      # or mean_per_class
    classes: [blackbird, robin, wren] # optional: default = the folder names / labels found, sorted
    seed: 0
    data:
      format: audiofolder             # root/<class>/**/*.wav|ogg|flac, or root/{train,val,test}/<class>/...
      root: clips
      # format: audio-csv             # a CSV with header path,label[,split]; paths relative to `root`
      # csv: labels.csv               #   (default root: the CSV's folder)
      val_fraction: 0.2               # used when the data gives no split
      test_fraction: 0.2
      min_per_class: 3
      manifest: manifests/my-birds.json   # default: <card folder>/manifests/<name>.json
    spectrogram: {sample_rate: 22050, f_max: 11025, clip_seconds: 3.0}   # front-end settings (unirep.audio.frontend)

Without a given split, each class is split by a seeded permutation: round(fraction * n) clips (at least one) to
test and to val, the rest to train. Missing files, labels outside `classes`, bad split names and classes with too
few clips are refused in one line; unreadable or empty audio files are refused, named, when a split is first read.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from unirep.audio.frontend import SpectrogramConfig
from unirep.audio.io import AUDIO_SUFFIXES
from unirep.errors import ConfigError, DataError
from unirep.fileio import atomic_write_json, sha256_file, sha256_json
from unirep.tasks.audio.base import AudioExamples, AudioTask
from unirep.tasks.base import SPLITS, ImageSet, SplitManifest, TaskCard
from unirep.tasks.card_fields import LABEL_METRICS, checked_card_fields, read_csv_rows

AUDIO_FORMATS = ("audiofolder", "audio-csv")
CARD_KEYS = {"name", "description", "classes", "metric", "seed", "source", "licence", "split", "suites", "provides",
             "data", "spectrogram"}
DATA_KEYS = {"format", "root", "csv", "val_fraction", "test_fraction", "min_per_class", "manifest"}
MAX_LISTED = 5


def read_audio_card(path: Path, raw: dict) -> TaskCard:
    """Check the parsed card `raw` read from `path` (relative data paths resolved against its folder)."""
    name, metric, classes = checked_card_fields(path, raw, CARD_KEYS, default_metric="top1", metrics=LABEL_METRICS)
    data = _data_section(raw["data"], path, name)
    spectrogram = raw.get("spectrogram") or {}
    SpectrogramConfig.from_dict(spectrogram, f"task card {path}")  # refused now, not at the first clip
    return TaskCard(name=name, description=str(raw.get("description", "")), classes=classes, metric=metric,
                    counts={}, source=str(raw.get("source", str(data.get("csv") or data.get("root")))),
                    licence=str(raw.get("licence", "")),
                    split=str(raw.get("split", "given by the data, else per class: seeded permutation, val/test "
                                               "fractions")),
                    suites=tuple(raw.get("suites") or ()), seed=int(raw.get("seed", 0)),
                    provides=str(raw.get("provides", f"the files named in {path}")),
                    extra={"kind": "audio", "data": data, "card_path": str(path), "spectrogram": dict(spectrogram)})


def _data_section(data: dict, path: Path, name: str) -> dict:
    unknown = sorted(set(data) - DATA_KEYS)
    if unknown:
        raise ConfigError(f"task card {path}: unknown data field(s) {unknown}; allowed: {sorted(DATA_KEYS)}")
    needed = "csv" if data["format"] == "audio-csv" else "root"
    if not data.get(needed):
        raise ConfigError(f"task card {path}: data.{needed} is required for format {data['format']}")
    out = dict(data)
    for key in ("root", "csv", "manifest"):
        if out.get(key):
            out[key] = str((path.parent / Path(str(out[key])).expanduser()).resolve())
    out.setdefault("manifest", str(path.parent / "manifests" / f"{name}.json"))
    for key in ("val_fraction", "test_fraction"):
        out[key] = float(out.get(key, 0.2))
        if not 0 < out[key] < 1:
            raise ConfigError(f"task card {path}: data.{key} must be between 0 and 1, got {out[key]}")
    if out["val_fraction"] + out["test_fraction"] >= 1:
        raise ConfigError(f"task card {path}: data.val_fraction + data.test_fraction must be below 1")
    out["min_per_class"] = int(out.get("min_per_class", 3))
    if out["min_per_class"] < 3:
        raise ConfigError(f"task card {path}: data.min_per_class must be at least 3 (one clip per split)")
    return out


def _folder_rows(root: Path) -> list[tuple[Path, str, str | None, str]]:
    """(file, label, given split, where) for root/<class>/** or root/{train,val,test}/<class>/**."""
    if not root.is_dir():
        raise DataError(f"audio folder {root} does not exist; fix data.root in the task card")
    top = sorted(p for p in root.iterdir() if p.is_dir())
    given = bool(top) and {p.name for p in top} <= set(SPLITS) and "train" in {p.name for p in top}
    rows = []
    for split_dir in top if given else [root]:
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            files = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            rows += [(f, class_dir.name, split_dir.name if given else None, str(f)) for f in files]
    if not rows:
        raise DataError(f"no audio files found under {root}/<class>/ (extensions {', '.join(AUDIO_SUFFIXES)})")
    return rows


def _csv_rows(table: Path, root: Path | None) -> list[tuple[Path, str, str | None, str]]:
    """The image CSV card's reader (header path,label[,split]; paths relative to `root`, default the CSV's folder)."""
    rows = read_csv_rows({"csv": str(table), "root": str(root) if root else None})
    return [(row.path, row.label, row.split, row.where) for row in rows]


class CustomAudioTask(AudioTask):
    """A task declared by an audio card: checked rows, the given or a built split, a written manifest."""

    def load_clips(self) -> AudioExamples:
        data = self.card.extra["data"]
        if data["format"] == "audio-csv":
            rows = _csv_rows(Path(data["csv"]), Path(data["root"]) if data.get("root") else None)
        else:
            rows = _folder_rows(Path(data["root"]))
        classes = list(self.card.classes) or sorted({r[1] for r in rows})
        outside = [f"{where}: {label!r}" for _, label, _, where in rows if label not in classes]
        if outside:
            raise DataError(f"task {self.name!r}: {len(outside)} label(s) outside the card's classes {classes} "
                            f"({'; '.join(outside[:MAX_LISTED])}); add them to `classes` or fix the rows")
        missing = [f"{where}: {file}" for file, _, _, where in rows if not file.is_file()]
        if missing:
            raise DataError(f"{len(missing)} audio file(s) not found ({'; '.join(missing[:MAX_LISTED])}); fix the "
                            "paths or remove the rows")
        labels = np.array([classes.index(r[1]) for r in rows], dtype=np.int64)
        base = Path(data.get("root") or Path(data["csv"]).parent).resolve()
        ids = [_relative_id(r[0], base) for r in rows]
        if len(set(ids)) != len(ids):
            raise DataError(f"task {self.name!r}: a clip is listed more than once; list each file once")
        self._indices = self._build_split([r[2] for r in rows], [r[3] for r in rows], labels, classes)
        self.card = dataclasses.replace(self.card, classes=tuple(classes),
                                        counts={s: len(self._indices[s]) for s in SPLITS})
        sha = sha256_json({"ids": ids, "labels": labels.tolist(), "files": [sha256_file(r[0]) for r in rows],
                           "given_split": [r[2] for r in rows]})
        self._write_manifest(ids, sha)
        return AudioExamples(ids, labels, [str(r[0]) for r in rows], sha, [r[3] for r in rows])

    def load_examples(self) -> tuple[ImageSet, str]:
        self.clip_examples  # noqa: B018 - reads the rows and fills the card's classes and counts first
        return super().load_examples()

    def official_split(self, examples: ImageSet) -> dict[str, np.ndarray]:
        return self._indices

    def _build_split(self, given: list[str | None], wheres: list[str], labels: np.ndarray,
                     classes: list[str]) -> dict[str, np.ndarray]:
        data = self.card.extra["data"]
        bad = [f"{w}: {g!r}" for g, w in zip(given, wheres, strict=True) if g is not None and g not in SPLITS]
        if bad or (any(given) and not all(given)):
            raise DataError(f"task {self.name!r}: split must be one of {list(SPLITS)} on every row or on none "
                            f"({'; '.join((bad or [w for g, w in zip(given, wheres, strict=True) if g is None])[:5])})")
        if any(given):
            split_of = np.array(given)
            indices = {s: np.flatnonzero(split_of == s) for s in SPLITS}
        else:
            counts = np.bincount(labels, minlength=len(classes))
            small = [f"{classes[c]} ({counts[c]})" for c in np.flatnonzero(counts < data["min_per_class"])]
            if small:
                raise DataError(f"task {self.name!r}: class(es) with fewer than {data['min_per_class']} clips: "
                                f"{', '.join(small[:MAX_LISTED])}; add clips, drop the class, or lower "
                                "data.min_per_class")
            indices = _per_class_split(labels, data["test_fraction"], data["val_fraction"],
                                       np.random.default_rng(self.card.seed))
        for split, idx in indices.items():
            absent = sorted(set(range(len(classes))) - set(labels[idx].tolist()))
            if absent:
                raise DataError(f"task {self.name!r}: the {split} split has no clip of class(es) "
                                f"{[classes[a] for a in absent[:MAX_LISTED]]}; every class needs clips in train, val "
                                "and test")
        return indices

    def _write_manifest(self, ids: list[str], sha: str) -> None:
        manifest = SplitManifest(task=self.name, seed=self.card.seed, data_sha256=sha,
                                 splits={s: [ids[i] for i in np.sort(self._indices[s])] for s in SPLITS})
        path = Path(self.card.extra["data"]["manifest"])
        try:
            atomic_write_json(path, manifest.to_dict())
        except OSError as exc:
            raise DataError(f"task {self.name!r}: cannot write the split manifest {path} ({exc.strerror or exc}); "
                            "set data.manifest to a writable path") from None


def _per_class_split(labels: np.ndarray, test_fraction: float, val_fraction: float,
                     rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per class: a seeded permutation; round(fraction * n) (at least one) to test, then to val, the rest to train
    (at least one kept for train)."""
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = len(members)
        n_test, n_val = max(1, round(test_fraction * n)), max(1, round(val_fraction * n))
        while n_test + n_val > n - 1:
            n_test, n_val = (n_test - 1, n_val) if n_test >= n_val else (n_test, n_val - 1)
        out["test"] += members[:n_test].tolist()
        out["val"] += members[n_test:n_test + n_val].tolist()
        out["train"] += members[n_test + n_val:].tolist()
    return {s: np.sort(np.asarray(v, dtype=np.int64)) for s, v in out.items()}


def _relative_id(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base).as_posix()
    except ValueError:
        return path.resolve().as_posix()
