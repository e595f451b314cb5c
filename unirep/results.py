"""Fixed-schema result records: one JSON file per (backbone, task, protocol, seed).

The leaderboard is built only from these records. Writes are atomic and existing records are skipped
unless forced, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

try:
    import fcntl
except ImportError:  # not POSIX: no inter-process locking (concurrent runs on one --out may compute a record twice)
    fcntl = None

from unirep.errors import DataError
from unirep.fileio import atomic_write_json

SCHEMA_VERSION = 1
T = TypeVar("T")


@dataclass
class ResultRecord:
    """One evaluation result. `score` is the test metric in percent; `val_score` the best val score.

    Fields:
        backbone: the backbone name; `backbone_identity` says which weights/layer/data config exactly.
        task, protocol, metric, seed: what was measured and how.
        hyperparameters: the values selected on val (e.g. {"C": 0.1}) and the sweep searched.
        split_manifest: the task's manifest summary (digest, counts, data hash) the numbers rest on.
        timings: seconds per phase (extract, fit...). versions: library versions. config: resolved run config.
        test_labels / test_predictions: per-example test outcome (manifest order), for bootstrap CIs.
        extra: protocol-specific values (e.g. val sweep curve, estimator internals).
    """

    backbone: str
    task: str
    protocol: str
    metric: str
    score: float
    val_score: float | None
    hyperparameters: dict
    n_train: int
    n_val: int
    n_test: int
    split_manifest: dict
    seed: int
    timings: dict
    versions: dict
    config: dict
    backbone_identity: dict = field(default_factory=dict)
    test_labels: list | None = None
    test_predictions: list | None = None
    extra: dict = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, where: str = "record") -> ResultRecord:
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - set(raw))
        if missing:
            raise DataError(f"{where}: missing field(s) {missing}")
        unknown = sorted(set(raw) - names)
        if unknown:
            raise DataError(f"{where}: unknown field(s) {unknown} (schema version {SCHEMA_VERSION})")
        if not isinstance(raw["score"], int | float):
            raise DataError(f"{where}: score must be a number, got {raw['score']!r}")
        return cls(**raw)



def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text)


def record_path(out_dir: str | Path, backbone: str, task: str, protocol: str, seed: int) -> Path:
    """records/<backbone>/<task>/<protocol>-seed<seed>.json under the run directory."""
    return Path(out_dir) / "records" / slug(backbone) / slug(task) / f"{slug(protocol)}-seed{seed}.json"


def write_record(out_dir: str | Path, record: ResultRecord) -> Path:
    path = record_path(out_dir, record.backbone, record.task, record.protocol, record.seed)
    return atomic_write_json(path, record.to_dict())


def read_json_object(path: str | Path, kind: str = "record", article: str = "a") -> dict:
    """The JSON object stored at `path` (a record of some kind); one DataError naming the file otherwise."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON {kind} ({exc})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: {article} {kind} must be a JSON object")
    return raw


def read_record(path: str | Path) -> ResultRecord:
    return ResultRecord.from_dict(read_json_object(path), where=str(path))


def existing_or_none(path: str | Path, read: Callable[[str | Path], T]) -> T | None:
    """`read(path)`, or None: none there, or an unreadable file (named on stderr, then computed again by the caller
    and replaced atomically; a torn or hand-broken file must not stop a resumed run)."""
    if not Path(path).exists():
        return None
    try:
        return read(path)
    except DataError as exc:
        print(f"unirep: {exc}; computing it again", file=sys.stderr)
        return None


def existing_record(path: str | Path) -> ResultRecord | None:
    """The finished record at `path`, or None (absent, or unreadable: named on stderr and computed again)."""
    return existing_or_none(path, read_record)


@contextmanager
def records_lock(out_dir: str | Path, backbone: str, task: str, enabled: bool = True) -> Iterator[None]:
    """Hold the exclusive lock of (backbone, task)'s records folder: two runs on one --out never compute the same
    records at once; the second waits (saying so), then reads what the first wrote. An flock on the folder itself,
    so a killed holder releases it with its last file descriptor and no stale lock file is left behind."""
    folder = Path(out_dir) / "records" / slug(backbone) / slug(task)
    if not enabled or fcntl is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    handle = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"unirep: another run is writing the records of {backbone}/{task} in {out_dir}; waiting for it",
                  file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


def load_records(root: str | Path) -> tuple[list[ResultRecord], list[tuple[Path, str]]]:
    """All good records under `root` (recursively) and the (path, reason) of each malformed one."""
    good, bad = [], []
    for path in sorted(Path(root).rglob("*.json")):
        if "records" not in path.parts:
            continue
        try:
            good.append(read_record(path))
        except DataError as exc:
            bad.append((path, str(exc)))
    return good, bad
