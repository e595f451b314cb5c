"""Cross-machine check: what of a run is bit-identical on another machine, what moves, and by how much.

`write` condenses an evaluation output folder (its records) and the feature-cache entries they were computed from
into one small JSON: the machine (CPU model, torch's CPU capability, thread count, library versions); per cache
entry the SHA-256 of the features and a fixed seeded projection of the first rows (float64), so float32-noise
differences can be measured without shipping the features; per record the test score, the val score and what was
selected on val. `compare` reads two such files and prints, for features, how many entries are bit-identical and
the largest relative difference of the others; for records, which cells are identical, which moved (by how much)
and whether the selection changed: in a chosen value (another C, k, ...), in the linear probe's certificate only (its
count of uncertain val predictions), or in floats' last bits only.

    .venv/bin/python scripts/fingerprint.py write runs/quickstart/eval --cache-dir ~/.cache/unirep/features \
        --out leaderboard/fingerprint.json
    .venv/bin/python scripts/fingerprint.py compare leaderboard/fingerprint.json mine.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from unirep.features import ExtractionSettings, FeatureCache
from unirep.fileio import atomic_write_json
from unirep.results import load_records
from unirep.runtime import cpu_info, library_versions
from unirep.tasks import create_task

PROJECTED_ROWS, PROJECTION_DIMS = 32, 8


def cpu_model() -> str:
    return cpu_info("model name") or platform.processor() or platform.machine()


def machine() -> dict:
    return {"cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "python": platform.python_version(), **library_versions()}


def feature_fingerprint(features: np.ndarray) -> dict:
    rng = np.random.default_rng(0)  # the same projection on every machine (depends only on the feature size)
    projection = rng.standard_normal((features.shape[1], PROJECTION_DIMS))
    rows = features[:PROJECTED_ROWS].astype(np.float64)
    return {"sha256": hashlib.sha256(np.ascontiguousarray(features).tobytes()).hexdigest(),
            "shape": list(features.shape), "projected": (rows @ projection).round(12).tolist()}


def write(run_dir: Path, cache_dir: Path, out: Path) -> None:
    records, problems = load_records(run_dir)
    if problems:
        sys.exit(f"fingerprint: {len(problems)} unreadable record(s) in {run_dir}, e.g. {problems[0]}")
    cache, tasks, features, cells = FeatureCache(cache_dir), {}, {}, {}
    for record in sorted(records, key=lambda r: (r.backbone, r.task, r.protocol, r.seed)):
        cells[f"{record.backbone} | {record.task} | {record.protocol} | seed {record.seed}"] = {
            "score": record.score, "val_score": record.val_score,
            "selected": {k: v for k, v in record.hyperparameters.items() if not isinstance(v, list | dict)}}
        config = record.config
        settings = ExtractionSettings(precision=config.get("precision", "fp32"),
                                      channels_last=config.get("channels_last", True))
        task = tasks.get(record.task) or tasks.setdefault(record.task, create_task(record.task))
        for split in ("train", "val", "test"):
            name = f"{record.backbone} | {record.task} | {split}"
            if name in features:
                continue
            entry = cache.load(cache.key(record.backbone_identity, task.manifest, split, settings), need_logits=False)
            if entry is not None:  # fine-tuning records have no cache entry
                features[name] = feature_fingerprint(entry.features)
    atomic_write_json(out, {"machine": machine(), "features": features, "records": cells})
    print(f"fingerprint: {len(features)} feature entries, {len(cells)} records -> {out}")


# How two records' selections can differ, most serious first (`selection_difference`).
SELECTION_DIFFERENCES = ("in a chosen value", "in the certificate only", "in last bits only")
# Bookkeeping of the linear probe's noise-stable choice (unirep.probes.linear): how many val predictions its tight
# solve could not vouch for. It follows where the solve stopped, so it may differ where the choice does not.
CERTIFICATE_KEYS = ("uncertain_val",)
LAST_BITS = 1e-12  # relative: floats this close are the same setting computed with another rounding


def selection_difference(a: dict, b: dict) -> str:
    """"" when equal; else which of `SELECTION_DIFFERENCES`: another value of a chosen setting (C, k, lr, ...), only
    the certificate's counts (`CERTIFICATE_KEYS`), or only floats within `LAST_BITS` of each other (e.g. a C grid
    computed by another CPU's pow)."""
    if a == b:
        return ""
    differing = [k for k in set(a) | set(b) if a.get(k) != b.get(k)]
    chosen = [k for k in differing if k not in CERTIFICATE_KEYS]
    if any(not _same_float(a.get(k), b.get(k)) for k in chosen):
        return SELECTION_DIFFERENCES[0]
    return SELECTION_DIFFERENCES[1] if len(chosen) < len(differing) else SELECTION_DIFFERENCES[2]


def _same_float(x: object, y: object) -> bool:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (x, y))
    return numbers and abs(float(x) - float(y)) <= LAST_BITS * max(abs(float(x)), abs(float(y)))


def compare(a_path: Path, b_path: Path) -> None:
    a, b = (json.loads(Path(p).read_text()) for p in (a_path, b_path))
    for key in sorted(set(a["machine"]) | set(b["machine"])):
        if a["machine"].get(key) != b["machine"].get(key):
            print(f"machine {key}: {a['machine'].get(key)}  vs  {b['machine'].get(key)}")
    common = sorted(set(a["features"]) & set(b["features"]))
    identical = [k for k in common if a["features"][k]["sha256"] == b["features"][k]["sha256"]]
    print(f"features: {len(identical)} of {len(common)} entries bit-identical")
    for key in common:
        if key in identical:
            continue
        pa, pb = (np.asarray(x["features"][key]["projected"]) for x in (a, b))
        rel = np.abs(pa - pb).max() / max(np.abs(pa).max(), 1e-30)
        print(f"  {key}: max relative difference of the projected rows {rel:.1e}")
    common = sorted(set(a["records"]) & set(b["records"]))
    moved = [k for k in common if a["records"][k]["score"] != b["records"][k]["score"]]
    kinds = {k: selection_difference(a["records"][k]["selected"], b["records"][k]["selected"]) for k in common}
    reselected = [k for k in common if kinds[k]]
    counts = ", ".join(f"{sum(kinds[k] == kind for k in reselected)} {kind}" for kind in SELECTION_DIFFERENCES)
    print(f"records: {len(common) - len(moved)} of {len(common)} test scores identical, "
          f"{len(reselected)} selections differ ({counts})")
    for key in sorted(set(moved) | set(reselected)):
        ra, rb = a["records"][key], b["records"][key]
        print(f"  {key}: {ra['score']:.6g} -> {rb['score']:.6g} ({rb['score'] - ra['score']:+.2g})"
              + (f"; selected ({kinds[key]}) {ra['selected']} -> {rb['selected']}" if kinds[key] else ""))
    only = sorted(set(a["records"]) ^ set(b["records"]))
    if only:
        print(f"records in one file only: {len(only)} (e.g. {only[0]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    w = commands.add_parser("write", help="fingerprint a run folder and its cached features")
    w.add_argument("run_dir", type=Path)
    w.add_argument("--cache-dir", type=Path, default=Path("~/.cache/unirep/features").expanduser())
    w.add_argument("--out", type=Path, required=True)
    c = commands.add_parser("compare", help="compare two fingerprints")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.command == "write":
        write(args.run_dir, args.cache_dir, args.out)
    else:
        compare(args.a, args.b)


if __name__ == "__main__":
    main()
