"""The environment switches unirep and the libraries it drives read, set in one scoped place.

Nothing in unirep assigns to `os.environ` except `scoped_environ` / `preserved_environ` here: a switch holds for
a `with` block (a command's run, a test) and afterwards the process's environment is what it was. `--download` on
the command line is `allow_downloads()` around that command, not a variable left set for whatever runs next.

Some libraries copy a variable into a module constant once, at import (huggingface_hub reads HF_HUB_OFFLINE into
`huggingface_hub.constants.HF_HUB_OFFLINE`, which timm's hub downloads consult); for those `SWITCHES` names the
constant too, and `switches` sets and restores both. A library switch unirep comes to need (ultralytics' offline
mode, config dir, safe loading, ...) is one more row of `SWITCHES`.

Example:
    >>> from unirep.runtime_env import allow_downloads, switches
    >>> with allow_downloads():
    ...     evaluate(cfg)  # standard-suite tasks may fetch missing data here, and only here
    >>> with switches(hub_offline=True):
    ...     create_backbone("resnet18", pretrained=True)  # timm's hub cache only, no network
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

ALLOW_DOWNLOAD = "UNIREP_ALLOW_DOWNLOAD"  # unirep's own: tasks may download their missing data (torchvision)
_TRUE = frozenset({"1", "true", "yes"})


@dataclass(frozen=True)
class Switch:
    """An environment variable a library reads, and the module constant it copies that variable into at import
    (when it does), so that setting the switch after the import still takes effect."""

    variable: str
    module: str | None = None
    constant: str | None = None


SWITCHES: dict[str, Switch] = {
    "download": Switch(ALLOW_DOWNLOAD),
    "hub_offline": Switch("HF_HUB_OFFLINE", "huggingface_hub.constants", "HF_HUB_OFFLINE"),
}


@contextlib.contextmanager
def scoped_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Within: each variable of `values` set to its string (None: unset); afterwards each is restored to its
    previous value or absence, also when the block raises."""
    with preserved_environ(*values):
        for name, value in values.items():
            _set_variable(name, value)
        yield


@contextlib.contextmanager
def preserved_environ(*names: str) -> Iterator[None]:
    """Within: anything may set or unset the variables `names` (e.g. Lightning's Trainer(deterministic=True) sets
    CUBLAS_WORKSPACE_CONFIG); afterwards each is back to its value or absence on entry, also when the block raises."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            _set_variable(name, value)


@contextlib.contextmanager
def switches(**values: bool | str | None) -> Iterator[None]:
    """Within: each switch of `SWITCHES` named by a keyword on (True: "1"), off (False: "0"), set to a string, or
    unset (None; the library's constant then keeps its value), in the environment and in the library's
    import-time constant; afterwards both restored.

    Example:
        >>> with switches(hub_offline=True):
        ...     import huggingface_hub.constants
        ...     huggingface_hub.constants.HF_HUB_OFFLINE
        True
    """
    unknown = sorted(set(values) - set(SWITCHES))
    if unknown:
        raise TypeError(f"unknown runtime switch(es) {unknown}: known are {sorted(SWITCHES)}")
    chosen = {SWITCHES[name]: value for name, value in values.items()}
    # The libraries are imported before the variables change, so a constant first read here reads the old value.
    modules = {switch: _import(switch.module) for switch in chosen if switch.module is not None}
    saved = {switch: getattr(module, switch.constant) for switch, module in modules.items() if module is not None}
    with scoped_environ({switch.variable: _as_variable(value) for switch, value in chosen.items()}):
        try:
            for switch in saved:
                if chosen[switch] is not None:
                    setattr(modules[switch], switch.constant, chosen[switch])
            yield
        finally:
            for switch, value in saved.items():
                setattr(modules[switch], switch.constant, value)


@contextlib.contextmanager
def allow_downloads(allowed: bool = True) -> Iterator[None]:
    """Within: tasks may download their missing data (`--download`). allowed=False changes nothing, so a user's
    own UNIREP_ALLOW_DOWNLOAD=1 still holds."""
    with switches(download=True) if allowed else contextlib.nullcontext():
        yield


def downloads_allowed() -> bool:
    """Whether tasks may download now: inside `allow_downloads()`, or with UNIREP_ALLOW_DOWNLOAD=1 set by the user.
    Off by default: tests and CI never download."""
    return is_on(ALLOW_DOWNLOAD)


def is_on(variable: str) -> bool:
    return os.environ.get(variable, "").strip().lower() in _TRUE


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:  # the library is not installed: nothing of it can read the constant
        return None


def _as_variable(value: bool | str | None) -> str | None:
    if isinstance(value, bool):
        return "1" if value else "0"
    return value


def _set_variable(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


__all__ = ["ALLOW_DOWNLOAD", "SWITCHES", "Switch", "allow_downloads", "downloads_allowed", "is_on",
           "preserved_environ", "scoped_environ", "switches"]
