"""Where unirep's own data files are: task cards, split manifests, suites and hierarchies (`tasks/`), run presets
(`configs/`) and the leaderboard page templates.

`tasks/` and `configs/` are edited at the top of the checkout, and setup.py maps them onto the packages
`unirep._bundled.tasks` and `unirep._bundled.configs`: a wheel carries them inside the package, an editable
install points those packages at the checkout's folders. Both are found here through `importlib.resources`, so
one copy serves `pip install unirep` and `pip install -e .` alike and nothing is read relative to the
working directory.

Example:
    >>> from unirep.resources import TASKS_DIR, find_config
    >>> (TASKS_DIR / "sklearn-digits.yaml").is_file()
    True
    >>> find_config("quickstart").name
    'quickstart.yaml'
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from unirep.errors import ConfigError


def _folder(package: str, *parts: str) -> Path:
    root = resources.files(package).joinpath(*parts)
    # unirep lists and globs these folders with pathlib; a zip import has no folders to hand out.
    if not isinstance(root, Path):
        raise RuntimeError(f"unirep's data files ({package}) are not on the file system ({root!r}): install unirep "
                           "as a regular wheel or from a checkout, not as a zip")
    return root


TASKS_DIR = _folder("unirep._bundled.tasks")
CONFIGS_DIR = _folder("unirep._bundled.configs")
TEMPLATES_DIR = _folder("unirep", "leaderboard", "templates")


def packaged_config(path: str | Path) -> Path | None:
    """unirep's own copy of `path` when it names one of its configs, written as in the checkout
    (`configs/sources/muldip.yaml`) or relative to `configs/` (`sources/muldip.yaml`); else None."""
    parts = Path(path).parts
    if Path(path).is_absolute() or not parts:
        return None
    inside = parts[1:] if parts[0] == "configs" else parts
    candidate = CONFIGS_DIR.joinpath(*inside) if inside else None
    return candidate if candidate is not None and candidate.is_file() else None


def find_config(spec: str | Path, folder: str = "") -> Path:
    """The YAML config `spec` names: a file as given (relative to the working directory), else unirep's packaged
    copy of it (`configs/quickstart.yaml` works from any directory), else the packaged `<folder>/<spec>.yaml`
    (a bare name such as `quickstart`, or `muldip` with folder="sources").

    Raises:
        ConfigError: nothing of that name, with the packaged names to choose from.
    """
    given = Path(spec).expanduser()
    if given.is_file():
        return given
    names = (str(spec), f"{spec}.yaml")
    for candidate in (*names, *(f"{folder}/{name}" for name in names if folder)):
        found = packaged_config(candidate)
        if found is not None:
            return found
    raise ConfigError(f"config {str(spec)!r} not found: neither a file (from {Path.cwd()}) nor one of unirep's "
                      f"packaged configs {packaged_config_names(folder)}; give a YAML path or one of those names")


def packaged_config_names(folder: str = "") -> list[str]:
    """Names of the packaged configs in `folder` (under `configs/`), e.g. ['eval-offline', 'quickstart', ...]."""
    return sorted(p.stem for p in CONFIGS_DIR.joinpath(folder).glob("*.yaml"))
