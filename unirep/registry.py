"""One registry mechanism for every component type (backbones, tasks, probes, schemes, aggregates...).

Components register themselves with a decorator, duplicates raise (a silent overwrite would make results
depend on import order), and lookups of unknown names suggest the closest registered ones.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from unirep.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories (classes or functions).

    Example:
        >>> PROBES = Registry("probe")
        >>> @PROBES.register("linear")
        ... class LinearProbe: ...
        >>> PROBES.get("linear") is LinearProbe
        True
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._fallbacks: list[Callable[[str], T | None]] = []

    def register(self, name: str | None = None, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator registering `obj` under `name` (default: its `__name__`) and any aliases."""

        def decorator(obj: T) -> T:
            for key in (name or obj.__name__, *aliases):  # type: ignore[attr-defined]
                self.add(key, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered ({self._entries[name]!r})")
        self._entries[name] = obj

    def add_fallback(self, resolver: Callable[[str], T | None]) -> None:
        """A resolver for names outside the registry (e.g. any timm model name); returns None if unknown."""
        self._fallbacks.append(resolver)

    def get(self, name: str) -> T:
        if name in self._entries:
            return self._entries[name]
        for resolver in self._fallbacks:
            found = resolver(name)
            if found is not None:
                return found
        raise UnknownNameError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"see `unirep list {self.kind}s`"
        return f"unknown {self.kind} {name!r}: {hint}"

    def list(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
