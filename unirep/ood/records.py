"""Fixed-schema OoD records: one JSON file per (backbone, benchmark, classifier, score), written atomically under
`<out>/ood-records/<backbone>/<benchmark>/<classifier>-<score>.json` (apart from `records/`, so `unirep build`
never mistakes them for probe records). Per-example test scores are kept, so bootstrap CIs need no re-run."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

from unirep.errors import DataError
from unirep.fileio import atomic_write_json
from unirep.results import existing_or_none, read_json_object, slug

OOD_SCHEMA_VERSION = 1
RECORDS_FOLDER = "ood-records"


@dataclass
class OodRecord:
    """One OoD score of one backbone on one benchmark.

    Fields:
        ood_score, paper: the score's registered name and what it is. hyperparameters: the values used (chosen on
            the val OoD set when it has a grid); val_selection: every candidate's val AUROC (ID val vs val OoD).
        classifier, classifier_hyperparameters: the head the logits come from (e.g. linear, {"C": ...}).
        id_accuracy: top-1 of the classifier on the ID test set, percent (None without a classifier).
        metrics: {"sets": {"near/<name>": {metric: value}, ...}, "near": means, "far": means}, percent;
            conventions: what each metric is (both FPR95 conventions are named there).
        id_test_scores, id_test_labels, id_test_predictions, ood_test_scores: per-example values (manifest order).
    """

    backbone: str
    benchmark: str
    classifier: str
    ood_score: str
    paper: str
    hyperparameters: dict
    val_selection: dict
    classifier_hyperparameters: dict
    id_accuracy: float | None
    metrics: dict
    conventions: dict
    benchmark_manifest: dict
    timings: dict
    versions: dict
    config: dict
    backbone_identity: dict = field(default_factory=dict)
    id_test_scores: list = field(default_factory=list)
    id_test_labels: list = field(default_factory=list)
    id_test_predictions: list | None = None
    ood_test_scores: dict = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    schema_version: int = OOD_SCHEMA_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, where: str = "OoD record") -> OodRecord:
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing, unknown = sorted(required - set(raw)), sorted(set(raw) - names)
        if missing or unknown:
            raise DataError(f"{where}: missing field(s) {missing}, unknown field(s) {unknown} (OoD schema version "
                            f"{OOD_SCHEMA_VERSION})")
        return cls(**raw)


def ood_record_path(out_dir: str | Path, backbone: str, benchmark: str, classifier: str, score: str) -> Path:
    return Path(out_dir) / RECORDS_FOLDER / slug(backbone) / slug(benchmark) / f"{slug(classifier)}-{slug(score)}.json"


def write_ood_record(out_dir: str | Path, record: OodRecord) -> Path:
    path = ood_record_path(out_dir, record.backbone, record.benchmark, record.classifier, record.ood_score)
    return atomic_write_json(path, record.to_dict())


def read_ood_record(path: str | Path) -> OodRecord:
    return OodRecord.from_dict(read_json_object(path, "OoD record", "an"), where=str(path))


def existing_ood_record(path: str | Path) -> OodRecord | None:
    """The finished record at `path`, or None (absent, or unreadable: named on stderr and computed again)."""
    return existing_or_none(path, read_ood_record)


def load_ood_records(root: str | Path) -> list[OodRecord]:
    """Every readable OoD record under `root`/ood-records (unreadable ones named on stderr and skipped)."""
    found = []
    for path in sorted((Path(root) / RECORDS_FOLDER).rglob("*.json")):
        record = existing_ood_record(path)
        if record is not None:
            found.append(record)
    return found


__all__ = ["OOD_SCHEMA_VERSION", "OodRecord", "existing_ood_record", "load_ood_records", "ood_record_path",
           "read_ood_record", "write_ood_record"]
