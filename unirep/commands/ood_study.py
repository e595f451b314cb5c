"""`unirep ood-study CONFIG [key=value...]`: fine-tuning strategies (frozen + linear probe, full fine-tuning, LP-FT,
WiSE-FT) x OoD benchmarks x every OoD score, one record per (network, benchmark, score), then the tables
(unirep.studies); re-run to resume."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from unirep.commands import Command, register_command

TABLES = ("networks.csv", "strategies.csv", "differences.csv", "tables.md")


@register_command("ood-study")
class OodStudyCommand(Command):
    help = ("Fine-tune backbones on OoD benchmarks' ID tasks (frozen + linear probe, full, LP-FT, WiSE-FT) and score "
            "every post-hoc OoD detector on each network: ID top-1, near/far AUROC and FPR95 with CIs.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("items", nargs="*", metavar="CONFIG|KEY=VALUE",
                            help="a study config (YAML; fields of unirep.studies.finetune_ood.FinetuneOodConfig, "
                                 "e.g. configs/ood/finetune-study.yaml) and overrides such as seeds=[0] max_train=600")
        parser.add_argument("--out", help="run directory (records under <out>/ood-records/, tables under <out>/)")
        parser.add_argument("--cache-dir", help="feature cache directory")
        parser.add_argument("--force", action="store_true", default=None,
                            help="fine-tune again and recompute existing records")

    def run(self, args: argparse.Namespace) -> int:
        from unirep.config import load_config
        from unirep.errors import ConfigError
        from unirep.resources import find_config
        from unirep.studies.finetune_ood import FinetuneOodConfig, run_study

        configs = [item for item in args.items if "=" not in item]
        if len(configs) > 1:
            raise ConfigError(f"ood-study takes one config file, got {configs}: merge them, or override keys with "
                              "key=value")
        path = find_config(configs[0], folder="ood") if configs else None
        dotlist = [item for item in args.items if "=" in item]
        cfg = load_config(FinetuneOodConfig, path, dotlist, out=args.out, cache_dir=args.cache_dir, force=args.force)
        start = time.perf_counter()
        result = run_study(cfg)
        written = write_tables(result.records, Path(cfg.out), cfg.n_boot)
        print(written["tables.md"].read_text(encoding="utf-8"))
        print(f"{len(result.records)} records ({result.new_records} new) in {Path(cfg.out) / 'ood-records'}; tables: "
              f"{', '.join(str(p) for p in written.values())} ({time.perf_counter() - start:.1f} s); AUROC and FPR95 "
              "in percent, FPR95 = OoD accepted at 95 % ID recall")
        return 0


def write_tables(records, out: Path, n_boot: int) -> dict[str, Path]:
    """The study's CSV and Markdown tables under `out`, from its records."""
    from unirep.fileio import atomic_write_text
    from unirep.studies.study_table import difference_table, markdown_tables, network_table, strategy_table

    networks = network_table(records, n_boot=n_boot)
    if networks.empty:
        return {name: atomic_write_text(out / name, "") for name in TABLES}
    summary = strategy_table(networks)
    tables = {"networks.csv": networks.round(3).to_csv(index=False),
              "strategies.csv": summary.round(3).to_csv(index=False),
              "differences.csv": difference_table(networks).round(3).to_csv(index=False),
              "tables.md": markdown_tables(summary)}
    return {name: atomic_write_text(out / name, text) for name, text in tables.items()}
