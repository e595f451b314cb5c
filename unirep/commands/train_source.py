"""`unirep train-source CONFIG [key=value ...]`: train a source-task scheme (or a comparison of presets) and
write unirep checkpoints that `unirep eval` loads by path."""

from __future__ import annotations

import argparse
import sys

from unirep.commands import Command, register_command
from unirep.errors import ConfigError


@register_command("train-source")
class TrainSourceCommand(Command):
    help = ("Train a backbone on a source task with a scheme (reference, muldip, multitask, fsft, fsft-dr) and "
            "write a unirep checkpoint; a killed run resumes when started again.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("config", metavar="CONFIG",
                            help="a preset name or YAML file (configs/sources/*.yaml), or a comparison preset "
                            "(configs/sources/compare.yaml) that trains several")
        parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                            help="config overrides, e.g. optim.epochs=2 label_sets.1.omega=3 trainer.devices=2 "
                            "trainer.strategy=ddp trainer.precision=bf16-mixed")

    def run(self, args: argparse.Namespace) -> int:
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        from unirep.sources.compare import is_comparison, resolve_preset, train_comparison

        bad = [item for item in args.overrides if "=" not in item]
        if bad:
            raise ConfigError(f"overrides must be key=value, got {bad}: e.g. optim.epochs=2")
        path = resolve_preset(args.config)
        if is_comparison(path):
            out, rows = train_comparison(path, args.overrides)
            if rank_zero_only.rank == 0 and rows:
                print_rows(rows)
                print(f"\nevaluate them: unirep eval --config {out / 'eval.yaml'}")
            return 0
        from unirep.sources.config import load_source_config
        from unirep.sources.train import train_source

        result = train_source(load_source_config(path, args.overrides))
        if result.checkpoint is not None:
            for network, heads in result.metrics.items():
                for head, m in heads.items():
                    print(f"{network:>16s} / {head:<16s} source val top-1 {m['top1']:6.2f} %  "
                          f"mean per class {m['mean_per_class']:6.2f} %")
            print(f"checkpoint {result.out} ({sum(t.network.feature_dim for t in result.networks)} features, "
                  f"{result.seconds:.0f} s); resolved config {result.out / 'config.yaml'}\n"
                  f"evaluate it: unirep eval {result.out} --tasks offline")
        return 0


def print_rows(rows: list[dict]) -> None:
    print(f"{'preset':16s} {'scheme':10s} {'nets':>4s} {'dim':>6s} {'val top-1':>9s} {'seconds':>8s}", file=sys.stdout)
    for row in rows:
        top1 = "-" if row["source_val_top1"] is None else f"{row['source_val_top1']:.2f}"
        print(f"{row['preset']:16s} {row['scheme']:10s} {row['networks']:4d} {row['num_features']:6d} {top1:>9s} "
              f"{row['seconds']:8.1f}")
