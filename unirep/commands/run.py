"""`unirep run CONFIG`: the main job (source schemes -> evaluation -> leaderboard) from one YAML file."""

from __future__ import annotations

import argparse

from unirep.commands import Command, register_command


@register_command("run")
class RunCommand(Command):
    help = ("Run a whole study from one config: train source schemes, evaluate them with the other backbones on the "
            "target tasks, build the leaderboard. Resumes from whatever is done.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("config", help="YAML run config, e.g. configs/quickstart.yaml, or the name of a config "
                            "that ships with unirep (quickstart: the main job, from any directory)")
        parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                            help="config overrides, e.g. eval.protocols=[linear] leaderboard.out=lb")

    def run(self, args: argparse.Namespace) -> int:
        from unirep.config import load_config
        from unirep.pipeline import RunConfig, run_pipeline
        from unirep.resources import find_config

        cfg = load_config(RunConfig, find_config(args.config), args.overrides)
        summary = run_pipeline(cfg)
        board = summary.board
        if board is None:  # another process of a distributed eval: global rank 0 reports
            return 0
        times = summary.seconds
        print(f"\nsource training {times.get('sources', 0):.0f} s, evaluation {times['eval']:.0f} s, "
              f"leaderboard {times['leaderboard']:.0f} s")
        print(f"{board.n_records} records: {len(board.backbones)} backbones x {len(board.tasks)} tasks x "
              f"{len(board.protocols)} protocols")
        print(f"leaderboard page: {(summary.leaderboard_out / 'index.html').resolve()}")
        print(f"records: {summary.eval_out / 'records'}\n")
        markdown = (summary.leaderboard_out / "leaderboard.md").read_text(encoding="utf-8").splitlines()
        print("\n".join(markdown[:40]))
        return 0
