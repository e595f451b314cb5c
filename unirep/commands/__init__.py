"""CLI subcommands, one module each, registered with `@register_command`. `unirep.cli` builds the parser
from this registry, so adding a command never touches an if/elif chain."""

from __future__ import annotations

import argparse

from unirep.registry import Registry


class Command:
    """A subcommand: `help` is its one-line description; `add_arguments` fills its parser; `run` returns
    the exit code. Input problems raise `unirep.errors.UnirepError`, which the CLI prints as one line."""

    help: str = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def run(self, args: argparse.Namespace) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


COMMANDS: Registry[type[Command]] = Registry("command")
register_command = COMMANDS.register

# Modules holding commands; each registers itself on import. Add yours here.
COMMAND_MODULES = (
    "unirep.commands.listing",
    "unirep.commands.evaluate",
    "unirep.commands.run",
    "unirep.commands.universality",
    "unirep.commands.build",
    "unirep.commands.train_source",
    "unirep.commands.train_detector",
    "unirep.commands.score",
    "unirep.commands.finetune",
    "unirep.commands.ood",
    "unirep.commands.ood_study",
    "unirep.commands.inspect",
    "unirep.commands.explain",
)
