"""`unirep build RESULTS_DIR...`: the leaderboard (CSV, Markdown, HTML page) from result records."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unirep.commands import Command, register_command
from unirep.errors import DataError

MAX_LISTED = 20


@register_command("build")
class BuildCommand(Command):
    help = ("Build the leaderboard from result records: long/wide/aggregate CSVs, a Markdown table and a static "
            "HTML page (sortable, filterable, with per-task bars and a universality plot). Idempotent.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("results", nargs="+", metavar="RESULTS_DIR",
                            help="run folders holding records/ (the --out of `unirep eval`); malformed records are "
                                 "skipped and named")
        parser.add_argument("--out", default="leaderboard", help="output folder")
        parser.add_argument("--reference", metavar="NAME",
                            help="backbone mNRG, aNRG and the Decathlon score are relative to; without one: mean, "
                                 "mean rank, Borda and z-score only")
        parser.add_argument("--axis", default="params",
                            help="plot universality against this key of the records' backbone_identity or extra, "
                                 "e.g. params, source_accuracy, num_features, data_config.input_size")
        parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples per CI (0: no CIs)")
        parser.add_argument("--level", type=float, default=0.95, help="CI level")
        parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
        parser.add_argument("--validate", action="store_true",
                            help="check the records as a submission first (schema, committed split manifests, "
                                 "selection on val) and write nothing if any fails")
        parser.add_argument("--manifests", metavar="DIR",
                            help="committed split manifests for --validate; unset: the manifests unirep ships "
                            "(tasks/manifests)")

    def run(self, args: argparse.Namespace) -> int:
        from unirep.leaderboard import build_leaderboard, write_leaderboard

        if args.validate:
            check_submission(args.results, args.manifests)
        board = build_leaderboard(args.results, reference=args.reference, axis=args.axis, n_boot=args.n_boot,
                                  level=args.level, seed=args.seed)
        for path, reason in board.skipped:
            print(f"unirep build: skipped malformed record {path}: {reason}", file=sys.stderr)
        for note in board.notes + [f"{b.suite}/{b.protocol}: {n}" for b in board.blocks for n in b.notes]:
            print(f"unirep build: note: {note}", file=sys.stderr)
        paths = write_leaderboard(board, args.out)
        print(f"{board.n_records} records ({len(board.skipped)} skipped): {len(board.backbones)} backbones x "
              f"{len(board.tasks)} tasks x {len(board.protocols)} protocols -> {Path(args.out) / 'index.html'}")
        for path in paths:
            print(f"wrote {path}")
        return 0


def check_submission(results: list[str], manifests: str | None) -> None:
    from unirep.leaderboard.validate import MANIFESTS_DIR, validate_submission

    problems = validate_submission(results, Path(manifests) if manifests else MANIFESTS_DIR)
    if not problems:
        return
    for problem in problems[:MAX_LISTED]:
        print(f"unirep build: invalid: {problem}", file=sys.stderr)
    more = f" (first {MAX_LISTED} listed)" if len(problems) > MAX_LISTED else ""
    raise DataError(f"{len(problems)} problem(s) in the submission{more}: fix them and re-run; nothing was written")
