"""What a run executes on: the torch device it resolves to and the library versions its results record.

One resolver and one collector for every part of unirep (feature extraction, probes, fine-tuning, records,
source checkpoints), so "auto" means the same everywhere and every output names the same libraries.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from unirep.errors import ConfigError

if TYPE_CHECKING:
    import torch

# Distributions whose versions a result depends on (their PyPI names); a missing one is left out of the record.
VERSIONED_PACKAGES = ("unirep", "torch", "torchvision", "timm", "scikit-learn", "faiss-cpu", "numpy", "lightning",
                      "omegaconf")


def resolve_device(device: str = "auto", *, setting: str = "device") -> torch.device:
    """A usable torch.device for `device`: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:N", or
    Lightning's accelerator name "gpu" (= "cuda"). In a process a launcher started for one device of several
    (LOCAL_RANK set: Lightning, torchrun), "auto", "cuda" and "gpu" mean that process's own GPU, cuda:LOCAL_RANK.

    Raises ConfigError, naming `setting` (the option the value came from), when torch does not know the name or
    CUDA is asked for where there is none: failing here beats failing at the first tensor moved there.

    Example:
        >>> resolve_device("auto").type in ("cpu", "cuda")
        True
    """
    import torch  # here, not at the top: `unirep.runtime` is imported by code that never touches torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device in ("cuda", "gpu") and "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    try:
        resolved = torch.device("cuda" if device == "gpu" else device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{setting} {device!r} is not a torch device: use 'cpu', 'cuda', 'cuda:N' or 'auto'") \
            from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{setting} {device!r} requested but CUDA is not available here: use 'cpu' or 'auto'")
    return resolved


def library_versions(packages: Sequence[str] = VERSIONED_PACKAGES) -> dict[str, str]:
    """{"python": version, package: installed version} for each installed package of `packages`.

    Versions are the installed distributions' (importlib.metadata), except unirep's own: the code that runs is
    what `unirep.__version__` names, even from a checkout that was never installed.

    Example:
        >>> library_versions(("numpy",)).keys()
        dict_keys(['python', 'numpy'])
    """
    from unirep import __version__

    versions = {"python": platform.python_version()}
    for package in packages:
        if package == "unirep":
            versions[package] = __version__
            continue
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def cpu_info(field: str) -> str:
    """A field of the first processor in /proc/cpuinfo ('model name', 'vendor_id', ...); '' where it cannot be
    read (not Linux, or no such field)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == field:
                return value.strip()
    except OSError:
        pass
    return ""


__all__ = ["VERSIONED_PACKAGES", "cpu_info", "library_versions", "resolve_device"]
