"""`unirep inspect`: diagnostics of a backbone on a task (what its units look for, dead and noisy units, occlusion,
attributions, fragility, representation geometry), written as one self-contained HTML report and a JSON.

Sections register into `unirep.inspect.sections.SECTIONS` when their module is imported; `import_sections()`
imports every module of SECTION_MODULES (the report and `unirep list sections` call it). Adding a section: a module
with a `@register_section` class, named here.

Layering: unirep.inspect reads backbones, tasks, the feature cache and the probes; nothing below it imports it.
"""

from __future__ import annotations

import importlib

# Modules holding sections, in the order their sections appear in the report. Add yours here.
# The order follows the questions of issue 14: dead units, noisy filters, what a unit looks for, context vs
# structure, attributions, fragility, then the representation-level numbers.
SECTION_MODULES = (
    "unirep.inspect.activations",
    "unirep.inspect.filters",
    "unirep.inspect.exemplars",
    "unirep.inspect.occlusion",
    "unirep.inspect.attributions",
    "unirep.inspect.robustness",
    "unirep.inspect.representation",
)


def import_sections() -> None:
    for module in SECTION_MODULES:
        importlib.import_module(module)


def list_sections(pattern: str = "*") -> list[str]:
    """Registered section names matching `pattern`, in report order (SECTION_MODULES' order, then by name)."""
    from unirep.inspect.sections import SECTIONS

    import_sections()

    def position(name: str) -> tuple[int, str]:
        module = SECTIONS.get(name).__module__
        return (SECTION_MODULES.index(module) if module in SECTION_MODULES else len(SECTION_MODULES), name)

    return sorted(SECTIONS.list(pattern), key=position)


__all__ = ["SECTION_MODULES", "import_sections", "list_sections"]
