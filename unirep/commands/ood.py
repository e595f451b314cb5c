"""`unirep ood BACKBONE... --benchmarks ...`: post-hoc OoD detection scores of each backbone's features on OoD
benchmarks (tasks/ood/), one record per (backbone, benchmark, classifier, score); re-run to resume."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from unirep.commands import Command, register_command
from unirep.commands.backbone_options import (
    COLLECTED,
    add_backbone_options,
    backbone_entries,
    in_command_line_order,
    refuse_backbone_keys,
)


def _names(groups: Sequence[str] | None) -> list[str]:
    return [name for group in (groups or []) for name in group.split(",") if name]


@register_command("ood")
class OodCommand(Command):
    help = ("Score backbones on OoD benchmarks with post-hoc detectors (MSP, energy, ReAct, ViM, Mahalanobis, kNN, "
            "...): AUROC, AUPR-In/Out, FPR@95%TPR (both conventions) per OoD set, near and far means.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("items", nargs="*", metavar="BACKBONE|KEY=VALUE",
                            help="backbone names (as in `unirep eval`) and config overrides as key=value (e.g. "
                                 "linear.n_c=10 max_input_size=96)")
        parser.add_argument("--benchmarks", nargs="+", help="OoD benchmark names (tasks/ood/*.yaml) or card paths")
        parser.add_argument("--scores", help="comma-separated score names (default: every registered score)")
        parser.add_argument("--classifier", choices=("linear", "zero-shot", "none"),
                            help="the head logit scores read: linear (unirep's linear probe, C chosen on ID val; "
                                 "default), zero-shot (a clip: backbone's class-prompt head, nothing trained; what "
                                 "MCM and GL-MCM read) or none (feature-only scores)")
        parser.add_argument("--config", help="YAML config (fields of unirep.ood.run.OodConfig)")
        parser.add_argument("--out", help="run directory (records under <out>/ood-records/)")
        parser.add_argument("--cache-dir", help="feature cache directory")
        parser.add_argument("--force", action="store_true", default=None, help="recompute existing records")
        parser.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                            help="a Python file that registers scores (@register_score), imported first; repeatable. "
                                 "Its scores run next to the registered ones (e.g. a score you are designing)")
        add_backbone_options(parser)

    def run(self, args: argparse.Namespace) -> int:
        from unirep.config import load_config
        from unirep.ood.run import OodConfig, run_ood

        for path in args.plugin:
            load_plugin(path)
        words = [*args.items, *(args.benchmarks or [])]
        dotlist = in_command_line_order([item for item in words if "=" in item], args)
        refuse_backbone_keys(dotlist)
        backbones = backbone_entries(args.items, getattr(args, COLLECTED, None) or [],
                                     config_has_backbones=args.config is not None)
        cfg = load_config(OodConfig, args.config, dotlist, backbones=backbones or None,
                          benchmarks=[b for b in _names(args.benchmarks) if "=" not in b] or None,
                          scores=_names([args.scores]) if args.scores else None, classifier=args.classifier,
                          out=args.out, cache_dir=args.cache_dir, force=args.force)
        start = time.perf_counter()
        records = run_ood(cfg)
        print(summary_table(records).to_string())
        print(f"\n{len(records)} records in {Path(cfg.out) / 'ood-records'} ({time.perf_counter() - start:.1f} s); "
              "AUROC and FPR95 in percent, FPR95 = OoD accepted at 95 % ID recall")
        return 0


def load_plugin(path: str) -> None:
    """Import the file at `path` (its @register_score decorators register its scores); one line if it cannot."""
    from unirep.errors import ConfigError

    file = Path(path)
    if not file.is_file() or file.suffix != ".py":
        raise ConfigError(f"--plugin {path}: not a Python file; give the path of a .py file that registers scores")
    spec = importlib.util.spec_from_file_location(f"unirep_plugin_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: any failure is reported as one line
        raise ConfigError(f"--plugin {path} failed to import ({type(exc).__name__}: {exc}): fix the file") from None
    sys.modules[spec.name] = module


def summary_table(records) -> pd.DataFrame:
    """One row per (backbone, benchmark, score): ID accuracy, near / far AUROC and FPR95 (ID-recall convention)."""
    rows = []
    for r in records:
        row = {"backbone": r.backbone, "benchmark": r.benchmark, "score": r.ood_score,
               "id_acc": r.id_accuracy if r.id_accuracy is not None else float("nan")}
        for group in ("near", "far"):
            if group in r.metrics:
                row[f"{group}_auroc"] = r.metrics[group]["auroc"]
                row[f"{group}_fpr95"] = r.metrics[group]["fpr95_id_recall"]
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).set_index(["backbone", "benchmark", "score"]).sort_index().round(2)
