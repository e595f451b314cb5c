"""Write (or check) the published manifests `tasks/ood/manifests/<benchmark>.json`: the exact example ids of every
set of each shipped OoD benchmark, and the digests of the task splits they are drawn from.

Usage:
    python -m unirep.ood.write_manifests            # rewrite every shipped benchmark's manifest
    python -m unirep.ood.write_manifests --check    # exit 1 when a manifest differs from what the data gives
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from unirep.errors import DataError, UnirepError
from unirep.fileio import atomic_write_json
from unirep.ood.benchmarks import MANIFESTS_DIR, create_benchmark, list_benchmarks


def manifest_path(benchmark: str, manifests_dir: Path = MANIFESTS_DIR) -> Path:
    return Path(manifests_dir) / f"{benchmark}.json"


def read_published_manifest(benchmark: str, manifests_dir: Path = MANIFESTS_DIR) -> dict:
    path = manifest_path(benchmark, manifests_dir)
    if not path.is_file():
        raise DataError(f"no published OoD manifest {path}: run `python -m unirep.ood.write_manifests`")
    return json.loads(path.read_text(encoding="utf-8"))


def write_manifests(benchmarks: list[str] | None = None, manifests_dir: Path = MANIFESTS_DIR) -> list[Path]:
    return [atomic_write_json(manifest_path(name, manifests_dir), create_benchmark(name).manifest())
            for name in benchmarks or list_benchmarks()]


def stale_manifests(benchmarks: list[str] | None = None, manifests_dir: Path = MANIFESTS_DIR) -> list[str]:
    problems = []
    for name in benchmarks or list_benchmarks():
        current = create_benchmark(name)
        path = manifest_path(name, manifests_dir)
        if not path.is_file():
            problems.append(f"{name}: {path} is missing")
        elif (published := read_published_manifest(name, manifests_dir))["digest"] != current.digest:
            problems.append(f"{name}: published digest {published['digest'][:12]} != current {current.digest[:12]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unirep.ood.write_manifests", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmarks", nargs="*", help="benchmark names (default: every shipped one)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if any manifest is stale")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = stale_manifests(args.benchmarks)
            for line in problems:
                print(line, file=sys.stderr)
            return 1 if problems else 0
        for path in write_manifests(args.benchmarks):
            print(path)
    except UnirepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
