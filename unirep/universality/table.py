"""Reading a wide score table (CSV): first column = method, every other column = one task's score in percent.

Read with the csv module rather than pandas so every problem can name its line, row and column, and so
duplicate task names are refused instead of silently renamed ("cub.1").
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd

from unirep.errors import DataError

# Cells meaning "no score for this method on this task" (handled by the `missing` policy of the aggregates).
MISSING_CELLS = frozenset({"", "nan", "na", "n/a", "-"})


def _cell_value(cell: str, where: str, column: str, method: str) -> float:
    text = cell.strip()
    if text.lower() in MISSING_CELLS:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{where}: column {column!r} has a non-numeric value {text!r} in row {method!r}: every "
                        "column after the first must be a task score in percent; remove or fix that column") from None


def read_score_table(path: str | Path) -> pd.DataFrame:
    """A methods x tasks DataFrame of floats (NaN for empty/"nan"/"NA"/"-" cells) from a wide CSV.

    Example:
        >>> table = read_score_table("scores.csv")  # doctest: +SKIP
        >>> table.loc["resnet50", "cub"]  # doctest: +SKIP
        64.2
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise DataError(f"{path}: cannot read the score table ({exc.strerror or exc}): check the path") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if len(rows) < 2 or len(rows[0]) < 2:
        raise DataError(f"{path}: a score table needs a header (method, task, ...) and at least one method row "
                        "with one task column")
    header = [cell.strip() for cell in rows[0]]
    tasks = header[1:]
    blank = [i + 2 for i, t in enumerate(tasks) if not t]
    if blank:
        raise DataError(f"{path}: header column(s) {blank} have no task name: name every task column")
    duplicated = sorted({t for t in tasks if tasks.count(t) > 1})
    if duplicated:
        raise DataError(f"{path}: duplicate task column(s) {duplicated}: give each task one column")
    methods: list[str] = []
    values: list[list[float]] = []
    for line, row in enumerate(rows[1:], start=2):
        where = f"{path} line {line}"
        if len(row) != len(header):
            raise DataError(f"{where}: {len(row)} cells but the header has {len(header)}: one score per task")
        method = row[0].strip()
        if not method:
            raise DataError(f"{where}: empty method name in the first column")
        if method in methods:
            raise DataError(f"{where}: method {method!r} appears twice: one row per method")
        methods.append(method)
        values.append([_cell_value(c, where, t, method) for c, t in zip(row[1:], tasks, strict=True)])
    table = pd.DataFrame(values, index=pd.Index(methods, name="method"), columns=tasks, dtype=float)
    return table
