"""`unirep inspect BACKBONE [BACKBONE2] --task TASK --out DIR`: look inside a representation (what its units look
for, dead and noisy units, occlusion, attributions, fragility, representation geometry); with two backbones, what
changed between them. Writes DIR/report.html (self-contained) and DIR/inspect.json (every number).

Backbones are named as for `unirep eval` (packaged weights, `random:<arch>`, `--weights FILE`, source checkpoints,
`--input-size`, `--label`); key=value items are `unirep eval` settings (max_input_size=64, linear.n_c=10,
cache_dir=..., device=...) or section settings (`exemplars.top_k=8`, `occlusion.window=8`).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from unirep.commands import Command, register_command
from unirep.commands.backbone_options import (
    COLLECTED,
    add_backbone_options,
    backbone_entries,
    in_command_line_order,
    refuse_backbone_keys,
    require_options,
)
from unirep.errors import ConfigError


def _split_words(values: list[str] | None) -> tuple[list[str], list[str]]:
    """Names given to a nargs="+" option (comma-separated or not) and the key=value items argparse put there."""
    names, items = [], []
    for value in values or []:
        if "=" in value:
            items.append(value)
        else:
            names.extend(v for v in value.split(",") if v)
    return names, items


def section_overrides(items: list[str], sections: list[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """`section.key=value` items as {section: {key: value}} (values parsed as YAML), and the other items."""
    import yaml

    settings: dict[str, dict[str, Any]] = {}
    rest = []
    for item in items:
        key, _, value = item.partition("=")
        section, _, setting = key.strip().partition(".")
        if section in sections:
            if not setting:
                raise ConfigError(f"{item!r}: a section setting is written {section}.KEY=VALUE")
            try:
                parsed = yaml.safe_load(value) if value.strip() else None
            except yaml.YAMLError:
                parsed = value
            settings.setdefault(section, {})[setting] = parsed
        else:
            rest.append(item)
    return settings, rest


class _Flat:
    """Stands for a backbone without spatial maps when the sections are checked before it is fully built."""

    spatial = False

    def __init__(self, label: str):
        self.label = label


@register_command("inspect")
class InspectCommand(Command):
    help = ("Look inside a representation on a task (units' exemplars, dead/noisy units, occlusion, attributions, "
            "robustness, RankMe/alpha-ReQ/NC1/CKA); with two backbones, what changed. Writes report.html + "
            "inspect.json.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("items", nargs="*", metavar="BACKBONE|KEY=VALUE",
                            help="one or two backbones (as for `unirep eval`) and key=value settings: eval settings "
                                 "(max_input_size=64, linear.n_c=10, cache_dir=...) or section settings "
                                 "(exemplars.top_k=8)")
        # --task and --out are required, checked in `run` (backbone_options.require_options), not by argparse.
        parser.add_argument("--task", help="the task (see `unirep list tasks`); required")
        parser.add_argument("--out", help="folder for report.html and inspect.json; required")
        parser.add_argument("--layers", nargs="+", metavar="LAYER",
                            help="layers to inspect: stage names (stage2), timm module names (blocks.3) or module "
                                 "paths (default: every stage)")
        parser.add_argument("--sections", nargs="+", metavar="SECTION",
                            help="sections to run, e.g. exemplars,representation (default: all that apply; see "
                                 "`unirep list sections`)")
        parser.add_argument("--images", type=int, default=128, metavar="N",
                            help="images each section draws from a split (seeded, the same for both backbones)")
        parser.add_argument("--seed", type=int, default=0, help="seed of the image draw and of random choices")
        parser.add_argument("--cache-dir", help="feature cache directory (the one `unirep eval` uses)")
        parser.add_argument("--task-card", action="append", default=[], metavar="YAML",
                            help="a custom task card (see tasks/README.md); repeatable")
        parser.add_argument("--download", action="store_true",
                            help="let standard-suite tasks download missing data")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        add_backbone_options(parser)

    def run(self, args: argparse.Namespace) -> int:
        from omegaconf import OmegaConf

        from unirep.config import EvalConfig, load_config
        from unirep.evaluate import checked_backbone_specs
        from unirep.fileio import ensure_writable_dir
        from unirep.inspect import list_sections
        from unirep.inspect.context import build_context
        from unirep.inspect.report import resolve_sections, run_sections, write_report
        from unirep.inspect.sections import check_section_settings
        from unirep.tasks import resolve_tasks
        from unirep.tasks.custom import add_task_card

        start = time.perf_counter()
        require_options(args, "inspect", ("task", "out"),
                        "unirep inspect BACKBONE --task sklearn-digits --out runs/inspect")
        for card in args.task_card:
            add_task_card(card)
        layers, layer_items = _split_words(args.layers)
        requested, section_items = _split_words(args.sections)
        args.items.extend(layer_items + section_items)
        if args.images < 1:
            raise ConfigError(f"--images must be at least 1, got {args.images}")
        every = list_sections()
        settings, eval_items = section_overrides([i for i in args.items if "=" in i], every)
        check_section_settings(settings)  # a misspelt section.key fails here, before any backbone is built
        dotlist = in_command_line_order(eval_items, args)
        refuse_backbone_keys(dotlist)
        backbones = backbone_entries(args.items, getattr(args, COLLECTED, None) or [])
        if not 1 <= len(backbones) <= 2:
            raise ConfigError(f"unirep inspect takes one backbone, or two to compare (A B), got {len(backbones)}: "
                              f"{', '.join(str(b) for b in backbones) or 'none'}")
        tasks = resolve_tasks([args.task])  # unknown: one line with close names
        if len(tasks) != 1:
            raise ConfigError(f"--task takes one task, got {args.task!r} ({len(tasks)} tasks): name one of them")
        task = tasks[0]
        cfg = load_config(EvalConfig, None, dotlist, backbones=backbones, tasks=[task], out=args.out,
                          cache_dir=args.cache_dir)
        specs = checked_backbone_specs(cfg)
        if requested:
            resolve_sections(requested, [])  # unknown names fail here, before any backbone is built
        out = ensure_writable_dir(args.out)  # an unwritable --out fails before any work, too
        def check_layers(label: str, spatial: bool) -> None:
            if requested and not spatial:  # refused before this backbone's features are extracted
                resolve_sections(requested, [_Flat(label)])

        contexts = [build_context(spec, task, cfg, layers=layers or None, out_dir=out, seed=args.seed,
                                  settings=settings, n_images=args.images, check_layers=check_layers)
                    for spec in specs]
        names, skipped = resolve_sections(requested or None, contexts)
        for name, why in skipped.items():
            print(f"unirep inspect: note: skipped section {name!r}: {why}", file=sys.stderr)
        run = run_sections(contexts, names, skipped=skipped, progress=not args.no_progress)
        config = {"command_line": list(getattr(args, "command_line", []) or []), "eval": OmegaConf.to_container(cfg),
                  "sections": names, "layers": layers or "stages", "images": args.images, "seed": args.seed,
                  "section_settings": settings}
        paths = write_report(run, contexts, out, config)
        seconds = time.perf_counter() - start
        print(f"{paths['html']} ({len(names)} sections, {' vs '.join(run.labels)} on {task}, {seconds:.1f} s); "
              f"numbers: {paths['json']}")
        if run.failed:
            print(f"unirep inspect: {len(run.failed)} section(s) failed: {', '.join(run.failed)} (the others are in "
                  "the report)", file=sys.stderr)
            return 1
        return 0
