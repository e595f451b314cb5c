"""Build the leaderboard from result records and write it: long/wide/aggregate CSVs, Markdown, HTML page.

Everything written is a function of the records alone (no build time, no random ids, seeded bootstrap), so
rebuilding from the same records gives the same bytes and a published leaderboard diffs cleanly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from unirep.errors import DataError
from unirep.fileio import atomic_write_text, ensure_writable_dir
from unirep.leaderboard.agreement import agreement_table
from unirep.leaderboard.blocks import aggregates_table, build_blocks, task_suites
from unirep.leaderboard.markdown import render_markdown
from unirep.leaderboard.model import Leaderboard, headline_block
from unirep.leaderboard.ood_section import ood_table
from unirep.leaderboard.seeds import seed_table, single_seed_backbones
from unirep.leaderboard.tables import Cell, config_digest, group_cells, long_table, wide_table
from unirep.leaderboard.validate import record_files, schema_problems
from unirep.results import ResultRecord, read_record
from unirep.tasks.base import CARDS_DIR

OUTPUT_FILES = ("index.html", "leaderboard.md", "results-long.csv", "results-wide.csv", "aggregates.csv",
                "agreement.csv", "seeds.csv", "ood.csv")
CSV_DECIMALS = 4

__all__ = ["OUTPUT_FILES", "Leaderboard", "build_leaderboard", "headline_block", "read_results", "write_leaderboard"]


def read_results(results_dirs: Sequence[str | Path]) -> tuple[list[ResultRecord], list[tuple[str, str]]]:
    """Good records of every folder and the (path, reason) of each malformed one.

    Reads like `unirep.results.load_records`, and also refuses records whose fields have the wrong types
    (`schema_problems`): `from_dict` checks field names and the score only, and the tables need the rest.
    """
    records: list[ResultRecord] = []
    skipped: list[tuple[str, str]] = []
    for root in results_dirs:
        if not Path(root).is_dir():
            raise DataError(f"results folder {str(root)!r} does not exist: give the --out folder of `unirep eval` "
                            "(it holds records/)")
        for path in record_files(root):
            try:
                record = read_record(path)
            except DataError as exc:
                # The reason starts with the path again (read_record's message); keep it once.
                skipped.append((str(path), str(exc).removeprefix(f"{path}: ")))
                continue
            problems = schema_problems(record)
            if problems:
                skipped.append((str(path), "; ".join(problems)))
            else:
                records.append(record)
    return records, skipped


def build_leaderboard(
    results_dirs: Sequence[str | Path],
    *,
    reference: str | None = None,
    axis: str = "params",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    suites: Mapping[str, Sequence[str]] | None = None,
    cards_dir: Path = CARDS_DIR,
) -> Leaderboard:
    """Read every record under `results_dirs` and compute the leaderboard (nothing is written).

    Args:
        results_dirs: run folders (each holding records/ at any depth); malformed records are skipped and named.
        reference: backbone mNRG, aNRG and the Decathlon score are relative to.
        axis: what universality is plotted against: a key of the records' `backbone_identity` or `extra`
            (dotted for nested values, e.g. "data_config.input_size").
        n_boot, level, seed: bootstrap settings of every CI (n_boot=0: no CIs).
        suites: {task: suites}; default: read from the task cards under `cards_dir`.

    Example:
        >>> board = build_leaderboard(["runs/eval"], reference="raw-pixels")
        >>> write_leaderboard(board, "leaderboard")
    """
    records, skipped = read_results(results_dirs)
    ood, ood_notes = ood_table(results_dirs, n_boot, level, seed)
    if not records and ood.empty:  # a `unirep ood` folder alone (ood-records/) gives a board of its OoD section
        where = ", ".join(map(str, results_dirs))
        raise DataError(f"no readable result records under {where} ({len(skipped)} malformed): run `unirep eval` "
                        "(or `unirep ood`) first, or point at the folder holding records/ (or ood-records/)")
    cells, notes = group_cells(records)
    tasks = sorted({c.task for c in cells})
    suites = dict(suites) if suites is not None else task_suites(tasks, cards_dir)
    blocks = build_blocks(cells, suites, reference, n_boot, level, seed)
    long = long_table(cells, n_boot, level, seed)
    agreement, agreement_notes = agreement_table(cells)
    seeds, seed_notes = seed_table(cells, reference, level)
    return Leaderboard(
        cells=cells,
        long=long,
        wide=wide_table(long),
        blocks=blocks,
        aggregates=aggregates_table(blocks),
        skipped=skipped,
        notes=notes + agreement_notes + ood_notes,
        reference=reference,
        axis=axis,
        axis_values=axis_values(cells, axis),
        n_boot=n_boot,
        level=level,
        n_records=sum(len(c.records) for c in cells),
        configs={config_digest(r.config): r.config for c in cells for r in c.records},
        agreement=agreement,
        seeds=seeds,
        seed_notes=seed_notes,
        single_seed=single_seed_backbones(cells),
        ood=ood,
    )


def axis_values(cells: Sequence[Cell], axis: str) -> dict[str, float]:
    """{backbone: value} of `axis` from the records' backbone_identity, else extra (first numeric one found)."""
    values: dict[str, float] = {}
    for cell in cells:
        if cell.backbone in values:
            continue
        for record in cell.records:
            found = _lookup(record.backbone_identity, axis)
            found = found if found is not None else _lookup(record.extra, axis)
            if found is not None:
                values[cell.backbone] = found
                break
    return dict(sorted(values.items()))


def _lookup(mapping: dict, dotted: str) -> float | None:
    value: object = mapping
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        return None
    return float(value)


def write_leaderboard(board: Leaderboard, out: str | Path) -> list[Path]:
    """Write every output under `out` (created if needed) and return their paths."""
    # Imported here: the page pulls in plotly/itables, which the tables and the Markdown do not need.
    from unirep.leaderboard.page import render_page, write_assets

    out = ensure_writable_dir(out)
    paths = [
        atomic_write_text(out / "results-long.csv", _csv(board.long)),
        atomic_write_text(out / "results-wide.csv", _csv(board.wide)),
        atomic_write_text(out / "aggregates.csv", _csv(board.aggregates)),
        atomic_write_text(out / "agreement.csv", _csv(board.agreement)),
        atomic_write_text(out / "seeds.csv", _csv(board.seeds)),
        atomic_write_text(out / "ood.csv", _csv(board.ood)),
        atomic_write_text(out / "leaderboard.md", render_markdown(board)),
    ]
    paths.extend(write_assets(out))
    paths.append(atomic_write_text(out / "index.html", render_page(board)))
    return paths


def _csv(frame: pd.DataFrame) -> str:
    return frame.round(CSV_DECIMALS).to_csv(index=False, lineterminator="\n")
