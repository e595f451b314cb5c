"""`unirep finetune`: fine-tune backbones on tasks (learning rate and epochs chosen on val) and write records.

It runs the evaluation pipeline with the `finetune` protocol, so records land where `unirep eval` puts them and
existing ones are skipped; `--compare` adds the linear and kNN probes on the same backbone for a side-by-side table.
With `finetune.strategy=ddp finetune.devices=N`, Lightning starts this command once per device.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from unirep.commands import Command, register_command
from unirep.commands.evaluate import add_run_arguments, config_from_args

MODES = ("full", "last-k", "lp-ft")


@register_command("finetune")
class FineTuneCommand(Command):
    help = "Fine-tune backbones on target tasks (lr and epochs chosen on val; records like `unirep eval`)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        # The eval options (--tasks, --config, --out, --task-card...), so both commands read configs alike.
        add_run_arguments(parser)
        parser.add_argument("--task", dest="tasks", nargs="+",
                            help="same as --tasks; key=value overrides may follow the task names")
        parser.add_argument("--mode", choices=MODES, help="full: all stages train; last-k: the last finetune.last_k "
                            "stages and the head; lp-ft: head first, then everything at a lower lr")
        parser.add_argument("--compare", action="store_true", help="also run the linear and knn probes")
        parser.add_argument("--force", action="store_true", default=None, help="recompute existing records")

    def run(self, args: argparse.Namespace) -> int:
        from unirep.evaluate import evaluate, is_global_zero, summary_table

        protocols = ["finetune", "linear", "knn"] if args.compare else ["finetune"]
        # `--task T key=value`: argparse hands the overrides after the task to --task; move them back.
        tasks = args.tasks or []
        args.tasks = [t for t in tasks if "=" not in t] or None
        mode = [f"finetune.mode={args.mode}"] if args.mode else []
        args.items = [*args.items, *(t for t in tasks if "=" in t), *mode]
        cfg = config_from_args(args, protocols=protocols, force=args.force)
        start = time.perf_counter()
        records = evaluate(cfg)
        if not is_global_zero():
            return 0
        print(summary_table(records).to_string(), file=sys.stdout)
        for r in records:
            if r.protocol == "finetune":
                h = r.hyperparameters
                seconds = sum(v for k, v in r.timings.items() if k.endswith("_s") and k != "protocol_s")
                print(f"{r.backbone} / {r.task}: {h['mode']} lr={h['lr']:g} epochs={h['epochs']} refit={h['refit']}"
                      f" val {r.val_score:.2f} test {r.score:.2f} ({seconds:.0f} s)")
        print(f"\n{len(records)} records in {Path(cfg.out) / 'records'} ({time.perf_counter() - start:.1f} s); "
              f"resolved config: {Path(cfg.out) / 'config.yaml'}")
        return 0
