"""The checks every user-written task card shares, whatever its data (images, clips, boxes): no unknown field, a
usable name, a metric the task kind can be scored with, no class listed twice. One line per problem, naming the card.
`unirep.tasks.custom` (ImageFolder / CSV), `unirep.tasks.audio.custom` and `unirep.detection.formats` read their
own `data` sections after these."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from unirep.errors import ConfigError
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
