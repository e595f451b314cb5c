"""Target tasks: a registry of adapters, each with a card under `tasks/` and a published split manifest.

Example:
    >>> from unirep.tasks import create_task
    >>> task = create_task("sklearn-digits")
    >>> len(task.split("train")), task.card.metric
"""

from __future__ import annotations

import importlib

from unirep.registry import Registry
from unirep.tasks.base import CARDS_DIR, SPLITS, ImageSet, SplitManifest, Task, TaskCard, load_card

TASKS: Registry[type[Task]] = Registry("task")
register_task = TASKS.register


def create_task(name: str) -> Task:
    """Build the registered task `name` from its card under `tasks/`."""
    _import_adapters()
    task_cls = TASKS.get(name)
    return task_cls(load_card(name))


def list_tasks(pattern: str = "*", suite: str | None = None) -> list[str]:
    _import_adapters()
    names = TASKS.list(pattern)
    if suite is not None:
        names = [n for n in names if suite in load_card(n).suites]
    return names


def list_suites() -> list[str]:
    _import_adapters()
    return sorted({s for n in TASKS.list() for s in load_card(n).suites})


def resolve_tasks(names: list[str]) -> list[str]:
    """Expand suite names into their tasks (order kept, duplicates dropped); unknown names raise."""
    out: list[str] = []
    suites = set(list_suites())
    for name in names:
        if name in suites and name not in TASKS:
            expanded = list_tasks(suite=name)
        else:
            TASKS.get(name)  # raises with close-name suggestions when unknown
            expanded = [name]
        out.extend(n for n in expanded if n not in out)
    return out


# Modules holding task adapters; each registers its tasks on import. Add yours here.
ADAPTER_MODULES = ("unirep.tasks.offline", "unirep.tasks.standard", "unirep.tasks.custom", "unirep.tasks.detection",
                   "unirep.tasks.audio")


def _import_adapters() -> None:
    # Importing lazily keeps `import unirep.tasks` cheap (no dataset code until a task is asked for).
    for module in ADAPTER_MODULES:
        importlib.import_module(module)


__all__ = ["TASKS", "CARDS_DIR", "SPLITS", "ImageSet", "SplitManifest", "Task", "TaskCard", "create_task",
           "list_tasks", "list_suites", "load_card", "register_task", "resolve_tasks"]
