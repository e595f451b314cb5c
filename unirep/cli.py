"""`unirep` console script: builds one argparse subcommand per registered command."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from unirep import __version__
from unirep.commands import COMMAND_MODULES, COMMANDS
from unirep.commands.backbone_options import locate_backbone_options
from unirep.errors import UnirepError
from unirep.runtime_env import allow_downloads


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


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Like parse_args, but positional BACKBONE / key=value items may also follow the options
    (`unirep eval random:resnet18 --tasks lfw-faces linear.n_c=10`); argparse alone stops collecting them. Per-backbone
    options (`--weights FILE`) learn which backbone they follow."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args, extra = parser.parse_known_args(argv)
    positional_list = next((name for name in ("items", "overrides") if isinstance(getattr(args, name, None), list)),
                           None)
    unknown = [item for item in extra if item.startswith("-") or positional_list is None]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        getattr(args, positional_list).extend(extra)
    locate_backbone_options(parser, argv, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    try:
        # `--download` holds while this command runs, not for the rest of the process (unirep.runtime_env).
        with allow_downloads(getattr(args, "download", False)):
            return int(args._command.run(args) or 0)
    except UnirepError as exc:
        print(f"unirep {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"unirep {args.command}: interrupted; finished results are kept, re-run to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`unirep list tasks | head`): stop quietly, as a POSIX tool killed by SIGPIPE does.
        # Later writes to the closed pipe (Python flushes stdout at exit) go to /dev/null instead of raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
