"""Per-backbone settings on the command line: `--weights FILE`, `--pretrained`, `--layer NAME`, `--input-size N`,
`--init-seed N`, `--label NAME`.

Each one belongs to the backbone named last before it, so several backbones can each have their own:

    unirep eval resnet50 --weights r50.safetensors --layer stage3 random:resnet50 raw-pixels --input-size 16 ...

With a single backbone on the command line they may stand anywhere (`unirep eval --pretrained resnet50 ...`).
They are the command-line form of the YAML mapping entries (`{name: resnet50, weights: r50.safetensors}`), which
keep working in config files. An option-style design was chosen over a compact item (`resnet50[weights=...]`):
brackets are shell globs, and `:` / `@` already mean `random:<arch>`, `unirep:<dir>` and `<name>@<layer>`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any

from unirep.errors import ConfigError

# Namespace attribute the options are collected in: (dest, value) while argparse runs, then
# (position, dest, value) once `locate_backbone_options` knows how many positional items preceded each.
COLLECTED = "backbone_options"
# option -> BackboneSpec field (unirep.config)
OPTIONS = {"--weights": "weights", "--pretrained": "pretrained", "--layer": "layer", "--input-size": "input_size",
           "--init-seed": "seed", "--label": "label"}
# argparse's own rule for tokens that are values, not options (`--init-seed -1`).
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


class BackboneOption(argparse.Action):
    """Collects the setting in argv order instead of overwriting a namespace attribute."""

    def __call__(self, parser, namespace, values, option_string=None):
        collected = list(getattr(namespace, COLLECTED, None) or [])
        collected.append((self.dest, True if self.nargs == 0 else values))
        setattr(namespace, COLLECTED, collected)


def add_backbone_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "backbone settings", "each applies to the backbone named last before it (with one backbone: anywhere); "
        "the YAML form is a mapping entry, e.g. backbones: [{name: resnet50, weights: r50.safetensors}]")
    settings = {
        "--weights": dict(metavar="FILE", help="local .safetensors/.pth weights for a timm architecture"),
        "--pretrained": dict(nargs=0, help="timm's hub weights for the name (needs the network, or timm's cache)"),
        "--layer": dict(metavar="NAME", help="features of an intermediate stage, e.g. stage3 (default: penultimate)"),
        "--input-size": dict(type=int, metavar="N", help="image side for this backbone (overrides max_input_size)"),
        "--init-seed": dict(type=int, metavar="N", help="seed of a random init (random:<arch>)"),
        "--label": dict(metavar="NAME", help="the name its results are filed under"),
    }
    for option, kwargs in settings.items():
        group.add_argument(option, dest=OPTIONS[option], action=BackboneOption, default=argparse.SUPPRESS, **kwargs)


def locate_backbone_options(parser: argparse.ArgumentParser, argv: Sequence[str],
                            args: argparse.Namespace) -> None:
    """Replace the collected (dest, value) pairs by (position, dest, value): position = how many positional items
    came before the option. argparse hands positionals after an option back as extras, so it cannot say this
    itself; parsing the prefix of argv up to each option token can, whatever the other options' arities.
    Also keeps argv itself as `args.command_line`, for `in_command_line_order`."""
    argv = list(argv)
    args.command_line = argv
    if not getattr(args, COLLECTED, None):
        return
    end = argv.index("--") if "--" in argv else len(argv)
    cuts = [k for k in range(1, end) if argv[k].startswith("-") and argv[k] != "-"
            and not _NEGATIVE_NUMBER.match(argv[k])]
    located: list[tuple[int, str, Any]] = []
    previous_items = 0
    for cut in [*cuts, len(argv)]:
        prefix, extra = parser.parse_known_args(argv[:cut])
        collected = getattr(prefix, COLLECTED, None) or []
        # what appeared since the previous cut came from the option token at that cut
        located.extend((previous_items, dest, value) for dest, value in collected[len(located):])
        previous_items = len(getattr(prefix, "items", None) or []) + sum(not e.startswith("-") for e in extra)
    setattr(args, COLLECTED, located)


def require_options(args: argparse.Namespace, command: str, options: Sequence[str], example: str) -> None:
    """Refuse, in one line, a command line without `options` (dests, e.g. ("task", "out")). Commands with backbone
    options check their required options here, after parsing, instead of argparse's `required=True`:
    `locate_backbone_options` parses prefixes of the command line, which a required option still to come would
    abort."""
    missing = [option for option in options if not getattr(args, option)]
    if missing:
        raise ConfigError(f"unirep {command} needs {' and '.join('--' + m for m in missing)} (e.g. `{example}`)")


def backbone_entries(items: Sequence[str], located: Sequence[tuple[int, str, Any]],
                     config_has_backbones: bool = False) -> list[Any]:
    """The backbone names among `items` (key=value overrides excluded), as mappings where options set fields.

    Example:
        >>> backbone_entries(["resnet50", "raw-pixels"], [(1, "weights", "r50.safetensors")])
        [{'name': 'resnet50', 'weights': 'r50.safetensors'}, 'raw-pixels']
    """
    names = [(i, item) for i, item in enumerate(items) if "=" not in item]
    settings: list[dict[str, Any]] = [{} for _ in names]
    for position, dest, value in located:
        option = next(o for o, d in OPTIONS.items() if d == dest)
        before = [k for k, (i, _) in enumerate(names) if i < position]
        if before:
            target = before[-1]
        elif len(names) == 1:
            target = 0
        elif not names:
            where = "the config's backbones take settings in their YAML entries, e.g. {name: resnet50, layer: " \
                    "stage3}" if config_has_backbones else "e.g. `unirep eval resnet50 --weights r50.safetensors`"
            raise ConfigError(f"{option} needs a backbone named on the command line before it ({where})")
        else:
            usage = option if dest == "pretrained" else f"{option} {value}"
            raise ConfigError(f"{option} comes before any backbone name and {len(names)} are named: put it after "
                              f"the backbone it belongs to (e.g. `{names[0][1]} {usage}`)")
        if dest in settings[target]:
            raise ConfigError(f"{option} is given twice for backbone {names[target][1]!r}: keep one")
        settings[target][dest] = value
    return [{"name": name, **chosen} if chosen else name for (_, name), chosen in zip(names, settings)]


def refuse_backbone_keys(dotlist: Sequence[str]) -> None:
    """`weights=FILE` and friends are settings of one backbone, not of the run: say where they go."""
    for item in dotlist:
        key = item.split("=", 1)[0].strip()
        option = next((o for o, d in OPTIONS.items() if d == key), None)
        if option is not None:
            value = item.split("=", 1)[1]
            usage = option if option == "--pretrained" else f"{option} {value or '...'}"
            extra = " (the probes' seeds are seeds=[0,1,2])" if key == "seed" else ""
            raise ConfigError(f"{item!r} is a backbone setting, not a run setting: write `{usage}` after the "
                              f"backbone's name{extra}, or give the backbone as a YAML mapping "
                              f"{{name: ..., {key}: ...}}")


def in_command_line_order(words: Sequence[str], args: argparse.Namespace) -> list[str]:
    """`words` sorted by where they stand on the command line (words it does not hold go last, in their order):
    key=value overrides are collected from several argparse lists, but the later one must win, as typed."""
    argv = getattr(args, "command_line", None) or []
    first: dict[str, int] = {}
    for index, token in enumerate(argv):
        first.setdefault(token, index)
    return sorted(words, key=lambda word: first.get(word, len(argv)))
