"""`unirep list`: what can be named on the command line."""

from __future__ import annotations

import argparse
import fnmatch
import importlib

from unirep.commands import Command, register_command

# What each listable kind lists; each value is "module:function" taking a pattern (and maybe a suite).
LISTERS = {
    "backbones": "unirep.backbones:list_backbones",
    "tasks": "unirep.tasks:list_tasks",
    "suites": "unirep.tasks:list_suites",
    "probes": "unirep.commands.listing:_list_probes",
    "protocols": "unirep.commands.listing:_list_protocols",
    "schemes": "unirep.sources.schemes:list_schemes",
    "sections": "unirep.inspect:list_sections",
    "ood-benchmarks": "unirep.ood.benchmarks:list_benchmarks",
    "ood-scores": "unirep.commands.listing:_list_ood_scores",
}


def _list_probes(pattern: str = "*") -> list[str]:
    from unirep.probes import PROBES, _import_probes

    _import_probes()
    return PROBES.list(pattern)


def _list_protocols(pattern: str = "*") -> list[str]:
    from unirep.fewshot import low_data_protocol_patterns
    from unirep.protocols import PROTOCOLS, _import_protocols

    _import_protocols()
    patterns = low_data_protocol_patterns()  # resolved by unirep.fewshot from the probe registry
    return PROTOCOLS.list(pattern) + [p for p in patterns if fnmatch.fnmatch(p, pattern)]


def _list_ood_scores(pattern: str = "*") -> list[str]:
    """Each OoD score with what it reads (the head's logits, or features only) and its paper."""
    from unirep.ood import SCORES

    return [f"{name:14s} {'head' if SCORES.get(name).needs_head else 'features':8s} {SCORES.get(name).paper}"
            for name in SCORES.list(pattern)]


@register_command("list")
class ListCommand(Command):
    help = "List registered backbones, tasks, suites, probes, protocols, schemes or inspect sections (glob optional)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("kind", choices=sorted(LISTERS))
        parser.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'efficientnet*'")
        parser.add_argument("--suite", help="with `tasks`: only the tasks of this suite")

    def run(self, args: argparse.Namespace) -> int:
        module, function = LISTERS[args.kind].split(":")
        lister = getattr(importlib.import_module(module), function)
        if args.kind == "tasks":
            names = lister(args.pattern, suite=args.suite)
        elif args.kind == "suites":
            names = lister()
        else:
            names = lister(args.pattern)
        if args.kind == "tasks":
            self._print_tasks(names)
        else:
            print("\n".join(names))
        return 0

    @staticmethod
    def _print_tasks(names: list[str]) -> None:
        from unirep.tasks import load_card

        for name in names:
            card = load_card(name)
            # custom cards learn their counts from the data, so they may have none yet
            counts = "/".join(str(card.counts.get(s, "?")) for s in ("train", "val", "test"))
            print(f"{name:28s} {card.num_classes:4d} classes  train/val/test {counts:18s} {card.metric}")
