"""The checks every user-written task card shares, whatever its data (images, clips, boxes): no unknown field, a
usable name, a metric the task kind can be scored with, no class listed twice. One line per problem, naming the card.
`unirep.tasks.custom` (ImageFolder / CSV), `unirep.tasks.audio.custom` and `unirep.detection.formats` read their
own `data` sections after these; the image and audio cards share the path,label[,split] CSV reader below."""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from unirep.errors import ConfigError, DataError
from unirep.metrics import Metric

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
LABEL_METRICS = [m.value for m in Metric if not m.needs_scores]  # the metrics of one-label-per-example tasks


def checked_card_fields(path: Path, raw: dict, card_keys: Iterable[str], *, default_metric: str,
                        metrics: Sequence[str]) -> tuple[str, str, tuple[str, ...]]:
    """(name, metric, classes) of the parsed card `raw` read from `path`, checked."""
    allowed = set(card_keys)
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"task card {path}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    name = str(raw.get("name", ""))
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"task card {path}: name {name!r} must be letters, digits, '.', '_' or '-'")
    metric = str(raw.get("metric", default_metric))
    if metric not in metrics:
        raise ConfigError(f"task card {path}: metric {metric!r} is not one of {list(metrics)}")
    classes = tuple(str(c) for c in raw.get("classes") or ())
    if len(set(classes)) != len(classes):
        dupes = sorted(c for c, n in Counter(classes).items() if n > 1)
        raise ConfigError(f"task card {path}: classes listed twice: {dupes}")
    return name, metric, classes


@dataclass(frozen=True)
class Row:
    """One example as declared: `where` names it for errors (e.g. "labels.csv row 7" or the file path)."""

    path: Path
    label: str
    split: str | None
    where: str


def read_csv_rows(data: dict) -> list[Row]:
    """A CSV with header path,label[,split]; paths relative to data.root (default: the CSV's folder)."""
    table = Path(data["csv"])
    if not table.is_file():
        raise DataError(f"CSV {table} does not exist; fix data.csv in the task card")
    root = Path(data.get("root") or table.parent)
    with open(table, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        if columns[:2] != ["path", "label"] or not set(columns) <= {"path", "label", "split"}:
            raise DataError(f"{table}: the header must be path,label or path,label,split, got {','.join(columns)}")
        reader.fieldnames = columns
        rows = []
        for line, record in enumerate(reader, start=2):
            path, label = (record.get("path") or "").strip(), (record.get("label") or "").strip()
            if not path or not label:
                raise DataError(f"{table} row {line}: empty path or label")
            split = (record.get("split") or "").strip() or None
            rows.append(Row(root / path, label, split, f"{table.name} row {line}"))
    if not rows:
        raise DataError(f"{table} lists no examples")
    return rows
