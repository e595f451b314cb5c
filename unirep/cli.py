"""`unirep` console script: builds one argparse subcommand per registered command."""

from __future__ import annotations

import argparse
import importlib
import sys

from unirep import __version__
from unirep.commands import COMMAND_MODULES, COMMANDS
from unirep.errors import UnirepError


def build_parser() -> argparse.ArgumentParser:
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    parser = argparse.ArgumentParser(
        prog="unirep",
        description="Measure how universal image representations are: backbones x target tasks -> probes -> "
        "universality scores and a leaderboard.",
    )
    parser.add_argument("--version", action="version", version=f"unirep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        command = COMMANDS.get(name)()
        sub_parser = sub.add_parser(name, help=command.help, description=command.help,
                                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        command.add_arguments(sub_parser)
        sub_parser.set_defaults(_command=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._command.run(args) or 0)
    except UnirepError as exc:
        print(f"unirep {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"unirep {args.command}: interrupted; finished results are kept, re-run to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
