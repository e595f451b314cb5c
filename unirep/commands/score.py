"""`unirep score BACKBONE... --tasks ...`: training-free transferability estimators, and how well they rank the
backbones compared with real linear-probe (or fine-tune) results.

It is `unirep eval` with the estimator protocols (same records, same feature cache, so features a probe already
extracted are not extracted again). After the backbone x task table of each estimator, it prints Kendall tau and
weighted tau against the linear probe (and fine-tuning) per task and their mean, when such records exist for the
same backbones and tasks in the run folder or in `--probe-results`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from unirep.commands import Command, register_command
from unirep.commands.evaluate import add_run_arguments, config_from_args
from unirep.results import ResultRecord


@register_command("score")
class ScoreCommand(Command):
    help = ("Score backbones on tasks with training-free estimators (LogME, H-score, NLEEP, LEEP, NCE) and compare "
            "their ranking with linear-probe results (Kendall / weighted tau).")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_run_arguments(parser)
        parser.add_argument("--estimators",
                            help="comma-separated, e.g. logme,hscore (default: every estimator; LEEP/NCE are skipped "
                                 "on backbones without a source classifier)")
        parser.add_argument("--probe-results", action="append", metavar="DIR",
                            help="run folder with linear-probe (or fine-tune) records to compare with; repeatable "
                                 "(default: the --out folder)")
        parser.add_argument("--force", action="store_true", default=None, help="recompute existing records")

    def run(self, args: argparse.Namespace) -> int:
        from unirep.estimators import ESTIMATORS
        from unirep.estimators.protocol import estimator_protocols
        from unirep.evaluate import evaluate

        registered = estimator_protocols()
        names = [n for n in args.estimators.split(",") if n] if args.estimators else registered
        for name in names:
            ESTIMATORS.get(name)  # unknown names fail here, with close-name suggestions, before any work
        cfg = config_from_args(args, protocols=names, force=args.force)
        start = time.perf_counter()
        records = evaluate(cfg)
        for estimator, table in estimator_tables(records).items():
            print(f"\n{estimator} (higher = should transfer better)\n{table.to_string()}")
        probe_dirs = args.probe_results or [cfg.out]
        print_agreement(records, probe_dirs)
        print(f"\n{len(records)} records in {Path(cfg.out) / 'records'} ({time.perf_counter() - start:.1f} s)")
        return 0


def estimator_tables(records: Sequence[ResultRecord]) -> dict[str, pd.DataFrame]:
    """{estimator: backbone x task table of its values (seed mean), 4 significant digits}."""
    if not records:
        return {}
    frame = pd.DataFrame([(r.protocol, r.backbone, r.task, r.score) for r in records],
                         columns=["estimator", "backbone", "task", "score"])
    tables = {}
    for estimator, group in frame.groupby("estimator", sort=True):
        table = group.pivot_table(index="backbone", columns="task", values="score", aggfunc="mean", sort=True)
        table.columns.name = None
        tables[str(estimator)] = table.map(lambda v: f"{v:.4g}" if pd.notna(v) else "–")
    return tables


def reference_records(records: Sequence[ResultRecord], probe_dirs: Sequence[str | Path]) -> list[ResultRecord]:
    """Linear-probe / fine-tune records under `probe_dirs` for the (backbone, task) pairs of `records`."""
    from unirep.leaderboard.agreement import reference_protocols
    from unirep.results import load_records

    wanted = {(r.backbone, r.task) for r in records}
    found = []
    for directory in probe_dirs:
        if not Path(directory).is_dir():
            print(f"unirep score: --probe-results {directory} does not exist; not compared with it", file=sys.stderr)
            continue
        good, _ = load_records(directory)
        references = set(reference_protocols([r.protocol for r in good]))
        found.extend(r for r in good if r.protocol in references and (r.backbone, r.task) in wanted)
    return found


def print_agreement(records: Sequence[ResultRecord], probe_dirs: Sequence[str | Path]) -> None:
    from unirep.leaderboard.agreement import MEAN_ROW, agreement_matrix, agreement_table, reference_protocols
    from unirep.leaderboard.tables import group_cells

    references = reference_records(records, probe_dirs)
    where = ", ".join(map(str, probe_dirs))
    if not references:
        print(f"\nno linear-probe records for these backbones and tasks under {where}: run `unirep eval ... "
              "--protocols linear` with the same --out to see how well each estimator ranks the backbones")
        return
    cells, _ = group_cells([*records, *references])
    table, notes = agreement_table(cells)
    for note in notes:
        print(f"unirep score: note: {note}", file=sys.stderr)
    if table.empty:
        print(f"\nno task has 3 or more backbones with both an estimator and a probe score (under {where}): "
              "add backbones to compare rankings")
        return
    for reference in reference_protocols(list(table["reference"])):
        matrix = agreement_matrix(table, reference).set_index("estimator")
        print(f"\nagreement with {reference} (Kendall tau / weighted tau per task; {MEAN_ROW} over tasks)\n"
              f"{matrix.to_string()}")
