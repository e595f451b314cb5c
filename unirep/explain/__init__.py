"""`unirep explain`: evidence for decisions, whatever produced them. One command family, one registry.

An explainer is a class registered with `@register_explainer("<name>")`:
    name: the registered name (set by the decorator's argument; also a class attribute for messages);
    help: one line for `unirep explain --help`;
    @classmethod add_arguments(cls, parser): the options it adds to the `explain` parser (they must not collide with
        the common options or with another explainer's: every explainer's options live on the one parser);
    run(self, args) -> int: builds the page from the parsed arguments, returns the exit code; bad input raises a
        `unirep.errors.UnirepError` (one line, exit 2).

The common options belong to the command (unirep/commands/explain.py): BACKBONE (positional; for detections the
detector), --task, --examples (ids or `first:N`), --out, --protocol. Dispatch (`explainer_name`): a detection task
(`task.kind == "detection"`) goes to the explainer "detections"; any other task to the explainer named by
`--protocol` (`knn` or `prototype`).

Explainers sit above the pipeline (they read backbones, tasks, probes and records); nothing below imports them.
Modules holding explainers register them on import: add yours to EXPLAINER_MODULES.
"""

from __future__ import annotations

import argparse
import importlib

from unirep.errors import ConfigError
from unirep.registry import Registry

# The task kind whose decisions are detections, and the explainer that shows their evidence.
DETECTION_KIND = "detection"
DETECTION_EXPLAINER = "detections"
# `--protocol` values for classification tasks: explainers registered under these names.
CASE_PROTOCOLS = ("knn", "prototype")


class Explainer:
    """Base class of an explainer (see the module docstring for the contract)."""

    name: str = ""
    help: str = ""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add this explainer's own options to the shared `explain` parser (none by default)."""

    def run(self, args: argparse.Namespace) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


EXPLAINERS: Registry[type[Explainer]] = Registry("explainer")


def register_explainer(name: str):
    """Decorator: register an Explainer subclass under `name` (duplicates raise) and set its `name`."""

    def decorator(cls: type[Explainer]) -> type[Explainer]:
        cls.name = name
        EXPLAINERS.add(name, cls)
        return cls

    return decorator


# Modules that register explainers on import. Add yours here (one line).
EXPLAINER_MODULES: tuple[str, ...] = (
    "unirep.explain.detections.explainer",
    "unirep.explain.knn_cases",
    "unirep.explain.prototype_cases",
)


def import_explainers() -> None:
    for module in EXPLAINER_MODULES:
        importlib.import_module(module)


def explainer_name(task_kind: str, protocol: str | None) -> str:
    """The explainer for a task of `task_kind` explained through `protocol` (`--protocol`).

    Example:
        >>> explainer_name("classification", "knn"), explainer_name("detection", None)
        ('knn', 'detections')
    """
    if task_kind == DETECTION_KIND:
        return DETECTION_EXPLAINER
    if protocol is None:
        raise ConfigError(f"unirep explain needs --protocol for a {task_kind} task: one of "
                          f"{', '.join(CASE_PROTOCOLS)} (the decision whose evidence the page shows)")
    if protocol not in CASE_PROTOCOLS:
        raise ConfigError(f"--protocol {protocol!r} has no case-based explanation: choose one of "
                          f"{', '.join(CASE_PROTOCOLS)}")
    return protocol


def get_explainer(name: str, task: str) -> type[Explainer]:
    """The registered explainer `name`; one line when it is not there (e.g. detections before its module exists)."""
    import_explainers()
    if name not in EXPLAINERS:
        registered = ", ".join(EXPLAINERS.list()) or "none"
        raise ConfigError(f"task {task!r} needs the explainer {name!r}, which is not installed in this unirep "
                          f"(registered explainers: {registered}); add its module to "
                          "unirep.explain.EXPLAINER_MODULES")
    return EXPLAINERS.get(name)


def resolve_examples(spec: str, ids: list[str], where: str) -> list[int]:
    """Indices into `ids` chosen by `--examples`: `first:N` (the first N in manifest order) or ids, comma-separated
    (in the order given; duplicates dropped). Unknown ids are refused in one line naming a few valid ones.

    Example:
        >>> resolve_examples("first:2", ["a", "b", "c"], "test split"), resolve_examples("c,a", ["a", "b", "c"], "")
        ([0, 1], [2, 0])
    """
    spec = (spec or "").strip()
    if spec.startswith("first:"):
        count = spec.removeprefix("first:")
        if not count.isdigit() or int(count) < 1:
            raise ConfigError(f"--examples {spec!r}: first:N needs a whole number N >= 1 (e.g. first:8)")
        return list(range(min(int(count), len(ids))))
    wanted = [w.strip() for w in spec.split(",") if w.strip()]
    if not wanted:
        raise ConfigError("--examples is empty: give example ids (comma-separated) or first:N")
    position = {example: i for i, example in enumerate(ids)}
    unknown = [w for w in wanted if w not in position]
    if unknown:
        shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
        raise ConfigError(f"--examples: {', '.join(unknown[:3])} not in the {where} ({len(ids)} examples, e.g. "
                          f"{shown}): give ids from it, or first:N")
    return list(dict.fromkeys(position[w] for w in wanted))


__all__ = ["CASE_PROTOCOLS", "DETECTION_EXPLAINER", "DETECTION_KIND", "EXPLAINERS", "EXPLAINER_MODULES", "Explainer",
           "explainer_name", "get_explainer", "import_explainers", "register_explainer", "resolve_examples"]
