"""The sections of an inspection report: one registry, one decorator, one result type.

A section answers one question about a backbone (dead units, noisy filters, what a unit looks for, occlusion,
fragility, ...). It reads an `InspectContext` (unirep/inspect/context.py: the backbone, its probe classifier and
the task's images) and returns a `SectionResult`: the numbers (JSON-able, written to the report's JSON) and an
HTML fragment (self-contained: images as data URIs). The report runs every selected section in registry order
and, for `unirep inspect A B`, asks each section for the differences between its two results.

Adding a section touches one place:

    @register_section("dead-units", title="Dead and dormant units", needs_spatial=False)
    class DeadUnits(Section):
        def run(self, ctx): ...
        def differences(self, a, b): ...   # optional

`needs_spatial`: the section needs spatial activation maps (CNN stages or ViT tokens reshaped to maps); a
backbone without them is refused for it in one line naming the sections that do apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from unirep.errors import ConfigError
from unirep.registry import Registry


@dataclass
class SectionResult:
    """What one section found for one backbone.

    numbers: every number shown, JSON-able (floats, ints, str, lists, dicts), with the settings that produced
        them (thresholds, windows, severities, seeds) so the JSON alone says how each was measured.
    html: the section's body (no <html>/<head>); images embedded as data URIs (unirep/inspect/figures.py).
    notes: plain-language caveats shown under the title (e.g. "SiLU network: only the dormant ratio applies").
    """

    name: str
    title: str
    numbers: dict[str, Any]
    html: str
    notes: list[str] = field(default_factory=list)


class Section:
    """Base class of a report section; subclasses are registered with `register_section`."""

    name: str = ""
    title: str = ""
    needs_spatial: bool = False
    # The section's settings (`section.key=value` on the command line) and their defaults: every key a user may set,
    # so a misspelt one is refused before any backbone runs (`check_section_settings`).
    defaults: ClassVar[dict[str, Any]] = {}

    def run(self, ctx) -> SectionResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def differences(self, a: SectionResult, b: SectionResult) -> SectionResult | None:
        """For `unirep inspect A B`: what changed between two backbones' results (None: show them side by side)."""
        return None


SECTIONS: Registry[type[Section]] = Registry("inspect section")


def register_section(name: str, *, title: str, needs_spatial: bool = False):
    """Class decorator: register a Section subclass under `name` with its report title."""

    def decorator(cls: type[Section]) -> type[Section]:
        cls.name, cls.title, cls.needs_spatial = name, title, needs_spatial
        SECTIONS.add(name, cls)
        return cls

    return decorator


def check_section_settings(settings: dict[str, dict[str, Any]]) -> None:
    """Refuse, in one line, a `section.key` the section does not have (its `defaults` list them all)."""
    for section, given in settings.items():
        defaults = SECTIONS.get(section).defaults
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise ConfigError(f"section {section!r} has no setting(s) {unknown}: its settings are "
                              f"{', '.join(f'{k}={v!r}' for k, v in defaults.items())}")
