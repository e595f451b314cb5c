"""`unirep eval` and `unirep extract`: backbones x tasks -> cached features -> probes -> records."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from unirep.commands import Command, register_command
from unirep.commands.backbone_options import (
    COLLECTED,
    add_backbone_options,
    backbone_entries,
    in_command_line_order,
    refuse_backbone_keys,
)
from unirep.config import EvalConfig, load_config


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("items", nargs="*", metavar="BACKBONE|KEY=VALUE",
                        help="backbone names (see `unirep list backbones`; a timm architecture needs --pretrained "
                        "or --weights FILE, or random:<arch> for random init) and config overrides as key=value "
                        "(e.g. linear.n_c=10 max_input_size=96)")
    parser.add_argument("--tasks", nargs="+", help="task or suite names (see `unirep list tasks|suites`)")
    parser.add_argument("--config", help="YAML config (see configs/); command-line values override it")
    parser.add_argument("--out", help="run directory for records and the resolved config")
    parser.add_argument("--cache-dir", help="feature cache directory")
    parser.add_argument("--task-card", action="append", default=[], metavar="YAML",
                        help="a custom task card (ImageFolder or CSV; see tasks/README.md); repeatable. Folders "
                        "of cards can also be named in UNIREP_TASK_DIRS")
    parser.add_argument("--download", action="store_true",
                        help="let standard-suite tasks download missing data (torchvision's download=True)")
    add_backbone_options(parser)


def config_from_args(args: argparse.Namespace, **extra) -> object:
    from unirep.tasks.custom import add_task_card

    for card in args.task_card:
        add_task_card(card)
    # key=value items may land after --tasks (argparse's nargs="+" takes them): they are overrides wherever they are,
    # applied in the order they were typed.
    words = [*args.items, *(args.tasks or [])]
    dotlist = in_command_line_order([item for item in words if "=" in item], args)
    refuse_backbone_keys(dotlist)
    backbones = backbone_entries(args.items, getattr(args, COLLECTED, None) or [],
                                 config_has_backbones=args.config is not None)
    tasks = [t for group in (args.tasks or []) if "=" not in group for t in group.split(",") if t]
    return load_config(EvalConfig, args.config, dotlist, backbones=backbones or None, tasks=tasks or None,
                       out=args.out, cache_dir=args.cache_dir, **extra)


@register_command("eval")
class EvalCommand(Command):
    help = "Evaluate backbones on target tasks with probes (records skipped when present: re-run to resume)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_run_arguments(parser)
        parser.add_argument("--protocols", help="comma-separated, e.g. linear,knn (see `unirep list protocols`)")
        parser.add_argument("--force", action="store_true", default=None, help="recompute existing records")

    def run(self, args: argparse.Namespace) -> int:
        from unirep.evaluate import evaluate, is_global_zero, summary_table

        protocols = args.protocols.split(",") if args.protocols else None
        cfg = config_from_args(args, protocols=protocols, force=args.force)
        start = time.perf_counter()
        records = evaluate(cfg)
        if not is_global_zero():  # the other processes of a distributed run: rank 0 reports
            return 0
        print(summary_table(records).to_string(), file=sys.stdout)
        print(f"\n{len(records)} records in {Path(cfg.out) / 'records'} ({time.perf_counter() - start:.1f} s); "
              f"resolved config: {Path(cfg.out) / 'config.yaml'}")
        return 0


@register_command("extract")
class ExtractCommand(Command):
    help = "Extract (and cache) features of backbones on tasks; optionally export them as .npz files."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_run_arguments(parser)
        parser.add_argument("--export", help="also write <export>/<backbone>/<task>/<split>.npz (features, labels)")

    def run(self, args: argparse.Namespace) -> int:
        from unirep.distributed import launch_world
        from unirep.evaluate import build_backbone, checked_backbone_specs, extraction_settings, run_world_settings
        from unirep.features import FeatureCache, backbone_inputs
        from unirep.fileio import atomic_save_npz
        from unirep.results import slug
        from unirep.tasks import create_task, resolve_tasks

        cfg = config_from_args(args)
        cache = FeatureCache(cfg.cache_dir)
        extraction_settings(cfg)  # refused here, before any process is launched
        specs = checked_backbone_specs(cfg)
        tasks = [create_task(name) for name in resolve_tasks(list(cfg.tasks))]
        world = launch_world(run_world_settings(cfg, {})[1])  # strategy=ddp devices=N: each extracts 1/N
        settings = extraction_settings(cfg, world)
        for spec in specs:
            backbone = build_backbone(spec, cfg)
            for task in tasks:
                for split in ("train", "val", "test"):
                    got = cache.get_or_extract(backbone, task.manifest, split, backbone_inputs(task, backbone, split),
                                               settings, world=world)
                    if not world.is_zero:
                        continue
                    state = "cached" if got.cached else f"{len(got.features) / max(got.seconds, 1e-9):.0f} img/s"
                    print(f"{spec.display_name:32s} {task.name:20s} {split:5s} {got.features.shape} {state}")
                    if args.export:
                        path = Path(args.export) / slug(spec.display_name) / task.name / f"{split}.npz"
                        atomic_save_npz(path, features=got.features, labels=got.labels)
        return 0
