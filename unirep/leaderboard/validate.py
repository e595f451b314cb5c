"""Validation of a leaderboard submission: the checks a results folder must pass before it is published.

1. Schema: every file under records/ reads as a `ResultRecord` (fixed fields, numeric score; a percent
   metric's score lies in 0..100), and no (backbone, task, protocol, seed) appears twice.
2. Splits: the record's split manifest digest equals the committed `tasks/manifests/<task>.json` digest,
   and its train/val/test counts equal the manifest's, so every number rests on the published split.
3. No test-set selection: a record with selected hyperparameters carries the val score they were selected
   on, that score is the best of its recorded val sweep, no hyperparameter or extra value is keyed by test
   data, and the score equals the metric recomputed from its own per-example test predictions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from unirep.errors import DataError
from unirep.leaderboard.tables import PERCENT_METRICS
from unirep.metrics import Metric
from unirep.results import ResultRecord, read_record
from unirep.tasks.base import CARDS_DIR, SPLITS

MANIFESTS_DIR = CARDS_DIR / "manifests"
TOLERANCE = 1e-6


@dataclass(frozen=True)
class Problem:
    """One reason a submission cannot be published: the file and what is wrong with it (with the fix)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def record_files(root: str | Path) -> Iterator[Path]:
    """JSON files under a records/ folder of `root`, as `unirep.results.load_records` reads them."""
    for path in sorted(Path(root).rglob("*.json")):
        if "records" in path.parts:
            yield path


def validate_submission(results_dirs: Sequence[str | Path], manifests_dir: str | Path = MANIFESTS_DIR) -> list[Problem]:
    """Every problem of the records under `results_dirs`; an empty list means the submission is valid.

    Example:
        >>> problems = validate_submission(["my-results"])
        >>> print("\\n".join(map(str, problems)) or "valid")
    """
    manifests = ManifestIndex(Path(manifests_dir))
    problems: list[Problem] = []
    seen: dict[tuple, str] = {}
    for root in results_dirs:
        for path in record_files(root):
            try:
                record = read_record(path)
            except DataError as exc:
                problems.append(Problem(str(path), str(exc).removeprefix(f"{path}: ")))
                continue
            key = (record.backbone, record.task, record.protocol, record.seed)
            if key in seen:
                problems.append(Problem(str(path), f"duplicate of {seen[key]} (same backbone, task, protocol and "
                                                   "seed): submit one record per run"))
                continue
            seen[key] = str(path)
            problems.extend(Problem(str(path), m) for m in record_problems(record, manifests))
    return problems


def record_problems(record: ResultRecord, manifests: ManifestIndex) -> list[str]:
    schema = schema_problems(record)
    if schema:  # the other checks read these fields
        return schema
    return [*split_problems(record, manifests), *selection_problems(record)]


def schema_problems(record: ResultRecord) -> list[str]:
    mappings = ("hyperparameters", "split_manifest", "timings", "versions", "config", "backbone_identity", "extra")
    problems = [f"{name} must be a JSON object, got {type(getattr(record, name)).__name__}" for name in mappings
                if not isinstance(getattr(record, name), dict)]
    if problems:
        return problems
    if not math.isfinite(record.score):
        problems.append(f"score is {record.score!r}: it must be a finite number")
    elif record.metric in PERCENT_METRICS and not 0.0 <= record.score <= 100.0:
        problems.append(f"score {record.score} of metric {record.metric!r} is outside 0..100: scores are percentages")
    if not isinstance(record.seed, int) or isinstance(record.seed, bool):
        problems.append(f"seed must be an integer, got {record.seed!r}")
    if not isinstance(record.split_manifest, dict) or not record.split_manifest.get("digest"):
        problems.append("split_manifest has no digest: write records with `unirep eval` (it stores the manifest)")
    return problems


class ManifestIndex:
    """The committed split manifests, read once each."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.read = cache(self._read)

    def _read(self, task: str) -> dict | str:
        path = self.directory / f"{task}.json"
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return (f"task {task!r} has no committed split manifest ({path}): only registered tasks with a "
                    "published split can be on the leaderboard (add the task and its manifest first)")
        except (OSError, json.JSONDecodeError) as exc:
            return f"the committed manifest {path} is unreadable ({exc})"
        if not isinstance(manifest, dict) or "digest" not in manifest:
            return f"the committed manifest {path} has no digest"
        return manifest


def split_problems(record: ResultRecord, manifests: ManifestIndex) -> list[str]:
    manifest = manifests.read(record.task)
    if isinstance(manifest, str):
        return [manifest]
    problems = []
    digest = record.split_manifest.get("digest") if isinstance(record.split_manifest, dict) else None
    if digest != manifest["digest"]:
        problems.append(f"split manifest digest {str(digest)[:12]}... differs from the committed "
                        f"tasks/manifests/{record.task}.json ({manifest['digest'][:12]}...): re-run on the published "
                        "split (update unirep and the task data, then `unirep eval --force`)")
    counts = manifest.get("counts", {})
    recorded = {"train": record.n_train, "val": record.n_val, "test": record.n_test}
    wrong = [f"{s} {recorded[s]} (manifest {counts[s]})" for s in SPLITS if s in counts and recorded[s] != counts[s]]
    if wrong:
        problems.append(f"split sizes differ from the committed manifest: {', '.join(wrong)}")
    return problems


def selection_problems(record: ResultRecord) -> list[str]:
    """Signs that something was selected on, or derived from, the test split."""
    problems = []
    test_keys = sorted(k for k in (*record.hyperparameters, *record.extra) if "test" in str(k).lower())
    if test_keys:
        problems.append(f"hyperparameters/extra hold test-derived value(s) {test_keys}: hyperparameters must be "
                        "selected on the val split only")
    if record.hyperparameters and not _is_number(record.val_score):
        problems.append("hyperparameters were selected but val_score is missing: selection must be on the val "
                        "split, and its score recorded")
    sweep = record.extra.get("val_sweep")
    if isinstance(sweep, dict) and sweep and _is_number(record.val_score):
        values = [v for v in sweep.values() if _is_number(v)]
        if values and abs(max(values) - record.val_score) > TOLERANCE * max(1.0, abs(record.val_score)):
            problems.append(f"val_score {record.val_score} is not the best score of its val sweep ({max(values)}): "
                            "the hyperparameters were not chosen by their val score")
    problems.extend(_prediction_problems(record))
    return problems


def _prediction_problems(record: ResultRecord) -> list[str]:
    if record.metric not in PERCENT_METRICS or record.test_labels is None or record.test_predictions is None:
        return []
    labels, predictions = np.asarray(record.test_labels), np.asarray(record.test_predictions)
    if len(labels) != len(predictions) or len(labels) != record.n_test:
        return [f"{len(labels)} test labels and {len(predictions)} predictions for n_test = {record.n_test}: there "
                "must be one of each per test example"]
    try:
        recomputed = Metric(record.metric)(labels, predictions)
    except DataError as exc:
        return [f"test_labels/test_predictions cannot be scored with {record.metric}: {exc}"]
    if abs(recomputed - record.score) > 1e-6 * max(1.0, abs(record.score)):
        return [f"score {record.score} differs from {record.metric} of its own test predictions ({recomputed:.6f})"]
    return []


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
