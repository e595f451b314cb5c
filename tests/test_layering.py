"""The layers run one way, checked over the source: every import of every module under unirep/ (module-level and
inside functions, absolute and relative), parsed with `ast`, never executed.

    task -> loader -> backbone -> feature cache -> probe/estimator -> record -> leaderboard

RULES is the one table of what must not import what; a new rule is one row.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "unirep"

# What sits on top of the pipeline: the CLI, its commands, the main job (`unirep run`) and the studies that combine
# pipelines (`unirep ood-study`) may use everything.
TOP = ("unirep.cli", "unirep.commands", "unirep.pipeline", "unirep.studies")
# What reads the pipeline's results and is never imported by it (future report packages join this tuple).
REPORTS = ("unirep.leaderboard", "unirep.reports", "unirep.inspect")

# (importers, forbidden, why): no module under an importer prefix imports a module under a forbidden prefix.
# An importer given as "*-except:<prefixes>" means every module of the package except those.
RULES = [
    (("unirep.backbones",), ("unirep.sources",),
     "a source checkpoint rebuilds its networks from unirep.backbones.source_networks; training sits above"),
    (("unirep.finetune",), ("unirep.sources",),
     "what fine-tuning shares with source training (cached splits, optimiser settings, schedules) lives in the "
     "shared training module, not in sources/"),
    ("*-except:" + ",".join(TOP + REPORTS), REPORTS,
     "a report reads what the pipeline produced; the pipeline never imports a report"),
    ("*-except:" + ",".join((*TOP, *REPORTS, "unirep.ood")), ("unirep.ood",),
     "OoD detection reads tasks, features and probes; nothing below it imports it"),
]
# Packages whose modules must not import each other in a cycle (lazy imports inside functions included). An
# import of a package's __init__ is no edge: a registry's __init__ imports the modules that register into it.
ACYCLIC = ("unirep", "unirep.leaderboard")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The unirep modules `source` (module `name`) imports anywhere in its body; `from a import b` counts as
    importing a.b when that is a module, else a."""
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m == "unirep" or m.startswith("unirep.")}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    return {name: imported_modules(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", known)
            for name, path in sorted(files.items())}


def under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def importers(spec, graph: dict[str, set[str]]) -> list[str]:
    if isinstance(spec, str):
        excluded = tuple(spec.removeprefix("*-except:").split(","))
        return [m for m in graph if not under(m, excluded)]
    return [m for m in graph if under(m, spec)]


def violations(graph: dict[str, set[str]], rule) -> list[str]:
    spec, forbidden, _ = rule
    return [f"{m} imports {target}" for m in importers(spec, graph) for target in sorted(graph[m])
            if under(target, forbidden)]


def cycles(graph: dict[str, set[str]], package: str, packages: frozenset[str] = frozenset()) -> list[list[str]]:
    """The modules on import cycles, grouped as the strongly connected components (size > 1, or a self-import)
    of the import graph restricted to `package`'s modules, without edges into `packages` (their __init__)."""
    nodes = [m for m in graph if under(m, (package,))]
    edges = {m: [t for t in graph[m] if t in nodes and t != package and t not in packages] for m in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges[node]:
                components.append(sorted(component))

    for node in nodes:
        if node not in index:
            visit(node)
    return components


GRAPH = import_graph()
PACKAGES = frozenset(module_name(p) for p in PACKAGE.rglob("__init__.py"))


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: f"{rule[0]}-not-{'+'.join(rule[1])}"[:80])
def test_layer_rule_holds(rule):
    assert importers(rule[0], GRAPH), f"rule {rule[0]} matches no module: the table is stale"
    assert violations(GRAPH, rule) == [], rule[2]


@pytest.mark.parametrize("package", ACYCLIC)
def test_no_import_cycle_in(package):
    assert cycles(GRAPH, package, PACKAGES) == []


def test_the_checks_can_fail():
    # Lazy, relative and `from package import submodule` imports are all seen; a cycle is found.
    known = {"unirep.backbones", "unirep.backbones.checkpoint", "unirep.sources", "unirep.sources.networks"}
    source = "def f():\n    from ..sources import networks\n"
    found = imported_modules(source, "unirep.backbones.checkpoint", False, known)
    assert found == {"unirep.sources.networks"}
    graph = {"unirep.backbones.checkpoint": found, "unirep.sources.networks": set()}
    assert violations(graph, RULES[0]) == ["unirep.backbones.checkpoint imports unirep.sources.networks"]
    loop = {"unirep.leaderboard.board": {"unirep.leaderboard.markdown"},
            "unirep.leaderboard.markdown": {"unirep.leaderboard.board"}, "unirep.leaderboard.page": set()}
    assert cycles(loop, "unirep.leaderboard") == [["unirep.leaderboard.board", "unirep.leaderboard.markdown"]]
    # The real graph holds the edges the rules are about (the parser reads the package as it is).
    assert "unirep.backbones.source_networks" in GRAPH["unirep.backbones.checkpoint"]
    assert "unirep.leaderboard.model" in GRAPH["unirep.leaderboard.markdown"]


def test_markdown_rendering_does_not_import_the_plotting_stack():
    # One fresh interpreter: the plotting packages loaded after importing the Markdown renderer, then the page
    # (which does load them: the probe can see them).
    code = ("import importlib, json, sys\n"
            "def plotting(): return sorted({m.split('.')[0] for m in sys.modules} & {'plotly', 'itables'})\n"
            "seen = []\n"
            "for module in ('unirep.leaderboard.markdown', 'unirep.leaderboard.page'):\n"
            "    importlib.import_module(module); seen.append(plotting())\n"
            "print(json.dumps(seen))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [[], ["itables", "plotly"]]
