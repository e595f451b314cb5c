"""Write (or check) the published split manifests `tasks/manifests/<task>.json` of the offline suite.

Usage:
    python -m unirep.tasks.offline.write_manifests            # rewrite all offline manifests
    python -m unirep.tasks.offline.write_manifests --check    # exit 1 when a manifest differs from the data
    python -m unirep.tasks.offline.write_manifests fashion-mnist lfw-faces
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from unirep.errors import DataError, UnirepError
from unirep.fileio import atomic_write_json
from unirep.tasks import CARDS_DIR, create_task, list_tasks

MANIFESTS_DIR = CARDS_DIR / "manifests"


def manifest_path(task: str, manifests_dir: Path = MANIFESTS_DIR) -> Path:
    return Path(manifests_dir) / f"{task}.json"


def read_published_manifest(task: str, manifests_dir: Path = MANIFESTS_DIR) -> dict:
    path = manifest_path(task, manifests_dir)
    if not path.is_file():
        raise DataError(f"no published manifest {path}: run `python -m unirep.tasks.offline.write_manifests {task}`")
    return json.loads(path.read_text(encoding="utf-8"))


def write_manifests(tasks: list[str] | None = None, manifests_dir: Path = MANIFESTS_DIR) -> list[Path]:
    """Write the manifest of each task (default: the offline suite); returns the paths written.

    Example:
        >>> write_manifests(["sklearn-digits"])  # doctest: +SKIP
        [PosixPath('.../tasks/manifests/sklearn-digits.json')]
    """
    names = tasks or list_tasks(suite="offline")
    return [atomic_write_json(manifest_path(n, manifests_dir), create_task(n).manifest.to_dict()) for n in names]


def stale_manifests(tasks: list[str] | None = None, manifests_dir: Path = MANIFESTS_DIR) -> list[str]:
    """One line per task whose published manifest is absent or differs from what its data gives now."""
    problems = []
    for name in tasks or list_tasks(suite="offline"):
        path = manifest_path(name, manifests_dir)
        current = create_task(name).manifest
        if not path.is_file():
            problems.append(f"{name}: {path} is missing")
        elif (published := read_published_manifest(name, manifests_dir))["digest"] != current.digest:
            problems.append(f"{name}: published digest {published['digest'][:12]} != current {current.digest[:12]} "
                            f"(counts {published['counts']} vs {current.counts})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unirep.tasks.offline.write_manifests", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tasks", nargs="*", help="task names (default: every task of the offline suite)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if any manifest is stale")
    parser.add_argument("--dir", type=Path, default=MANIFESTS_DIR, help="manifest folder (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = stale_manifests(args.tasks, args.dir)
            for line in problems:
                print(line, file=sys.stderr)
            return 1 if problems else 0
        for path in write_manifests(args.tasks, args.dir):
            print(path)
    except UnirepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
