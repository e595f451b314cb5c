"""`unirep universality TABLE.csv`: universality aggregates of a methods x tasks score table."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import pandas as pd

from unirep.commands import Command, register_command
from unirep.fileio import atomic_write_json, atomic_write_text, ensure_writable_dir, sha256_file
from unirep.universality import (
    AGGREGATES,
    DECATHLON_CONVENTIONS,
    MISSING_POLICIES,
    compute_aggregates,
    read_score_table,
)


@register_command("universality")
class UniversalityCommand(Command):
    help = ("Aggregate a methods x tasks score table (CSV, scores in percent) into universality numbers: mean, "
            "mean rank, mNRG/aNRG, Borda, z-score, Visual Decathlon, relative gain.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("table", metavar="TABLE.csv",
                            help="wide CSV: first column = method, every other column = one task's score in percent")
        parser.add_argument("--reference", metavar="NAME",
                            help="method NRG, relative gain and the Decathlon E_max are relative to (needed by "
                                 "mnrg, anrg, relative_gain, decathlon)")
        parser.add_argument("--aggregates", metavar="A,B,...",
                            help=f"comma-separated, from {', '.join(AGGREGATES.list())} ('decathlon' = the "
                                 "--decathlon-emax one); default: all that --reference allows")
        parser.add_argument("--s-max", type=float, default=100.0, help="the perfect score of every task")
        parser.add_argument("--decathlon-emax", choices=DECATHLON_CONVENTIONS, default="reference",
                            help="Decathlon E_max: the reference's error (TPAMI'19) or 2 x the baseline's (Rebuffi)")
        parser.add_argument("--baseline", metavar="NAME",
                            help="Decathlon baseline for --decathlon-emax double_baseline; None = the --reference")
        parser.add_argument("--missing", choices=MISSING_POLICIES, default="error",
                            help="a method without a score on some task: refuse, or aggregate complete tasks only")
        parser.add_argument("--out", metavar="PREFIX", help="also write PREFIX.csv and PREFIX.json")

    def run(self, args: argparse.Namespace) -> int:
        table = read_score_table(args.table)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = compute_aggregates(table, reference=args.reference, aggregates=args.aggregates,
                                        s_max=args.s_max, decathlon_emax=args.decathlon_emax,
                                        baseline=args.baseline, missing=args.missing)
        for warning in caught:
            print(f"unirep universality: warning: {warning.message}", file=sys.stderr)
        print(render(result))
        if args.out:
            for path in write_outputs(result, args.out, Path(args.table)):
                print(f"wrote {path}")
        return 0


def _sorted_for_reading(result: pd.DataFrame) -> pd.DataFrame:
    """Best first by the first aggregate, so the printed table reads as a ranking."""
    first = result.columns[0]
    return result.sort_values(first, ascending=not result.attrs["higher_is_better"][first], kind="stable")


def render(result: pd.DataFrame) -> str:
    attrs = result.attrs
    lower = [n for n, higher in attrs["higher_is_better"].items() if not higher]
    lines = [
        f"{len(result)} methods x {len(attrs['tasks'])} tasks ({', '.join(attrs['tasks'])}); "
        f"reference: {attrs['reference'] or '-'}",
    ]
    if attrs["dropped_tasks"]:
        lines.append(f"dropped tasks with missing scores: {', '.join(attrs['dropped_tasks'])}")
    if any(n.startswith("decathlon") for n in result.columns):
        lines.append(f"decathlon E_max: {attrs['decathlon_emax']} (baseline: {attrs['baseline']})")
    lines.append("higher is better" + (f", except {', '.join(lower)} (lower is better)" if lower else ""))
    lines.append(_sorted_for_reading(result).to_string(float_format=lambda v: f"{v:.2f}"))
    return "\n".join(lines)


def write_outputs(result: pd.DataFrame, prefix: str, source: Path) -> list[Path]:
    prefix_path = Path(prefix)
    ensure_writable_dir(prefix_path.parent)
    csv_path = prefix_path.with_name(prefix_path.name + ".csv")
    json_path = prefix_path.with_name(prefix_path.name + ".json")
    atomic_write_text(csv_path, result.to_csv())
    payload = {
        "input": str(source),
        "input_sha256": sha256_file(source),
        **result.attrs,
        "results": {method: row.to_dict() for method, row in result.iterrows()},
    }
    atomic_write_json(json_path, payload)
    return [csv_path, json_path]
