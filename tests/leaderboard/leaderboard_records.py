"""Synthetic but valid result records: real ResultRecord fields, scores computed from the per-example test
predictions they carry (so bootstrap CIs exist and agree with the scores)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from unirep.fileio import atomic_write_json
from unirep.metrics import Metric
from unirep.results import ResultRecord, write_record
from unirep.tasks.base import SplitManifest

BACKBONES = {"alpha-net": (0.9, 11_000_000), "beta-net": (0.75, 3_500_000), "gamma-net": (0.6, 25_000_000),
             "raw-pixels": (0.4, 0)}
TASKS = {"digits": ("top1", 150, 10), "faces": ("mean_per_class", 120, 2), "textures": ("top1", 90, 3)}
PROTOCOLS = {"linear": 0.0, "knn": -0.08}
SUITES = {"digits": ("offline",), "faces": ("offline", "small"), "textures": ("small",)}


def manifest(task: str) -> SplitManifest:
    """The task's split as unirep publishes it (ids per split), so digests are computed the real way."""
    _, n_test, _ = TASKS[task]
    sizes = {"train": 3 * n_test, "val": n_test, "test": n_test}
    start = {"train": 0, "val": 3 * n_test, "test": 4 * n_test}
    splits = {s: [f"{task}-{i:05d}" for i in range(start[s], start[s] + n)] for s, n in sizes.items()}
    return SplitManifest(task=task, seed=0, data_sha256="d" * 64, splits=splits)


def manifest_summary(task: str) -> dict:
    return manifest(task).summary()


def write_manifests(directory: Path) -> Path:
    for task in TASKS:
        atomic_write_json(directory / f"{task}.json", manifest(task).to_dict())
    return directory


def make_record(backbone: str, task: str, protocol: str, seed: int = 0, **overrides) -> ResultRecord:
    accuracy, params = BACKBONES[backbone]
    metric, n_test, n_classes = TASKS[task]
    # crc32, not hash(): str hashes change per process, and the records must be the same in every run.
    rng = np.random.default_rng(zlib.crc32(f"{backbone}/{task}/{protocol}/{seed}".encode()))
    labels = np.random.default_rng(len(task)).integers(0, n_classes, n_test)
    correct = rng.random(n_test) < accuracy + PROTOCOLS.get(protocol, 0.0)
    predictions = np.where(correct, labels, (labels + 1) % n_classes)
    counts = manifest_summary(task)["counts"]
    values = dict(
        backbone=backbone, task=task, protocol=protocol, metric=metric,
        score=Metric(metric)(labels, predictions), val_score=80.0 + seed,
        hyperparameters={"C": 0.1} if protocol == "linear" else {"k": 20},
        n_train=counts["train"], n_val=counts["val"], n_test=counts["test"],
        split_manifest=manifest_summary(task), seed=seed, timings={"protocol_s": 0.5},
        versions={"python": "3.11.9", "unirep": "0.1.0", "torch": "2.15.0", "timm": "1.0.31"},
        config={"backbones": [backbone], "tasks": [task], "protocols": [protocol], "seeds": [seed]},
        backbone_identity={"name": backbone, "weights_id": f"sha256:{backbone}", "params": params,
                           "num_features": 64},
        test_labels=labels.tolist(), test_predictions=predictions.tolist(),
        extra={"val_sweep": {"0.1": 80.0 + seed, "1.0": 70.0}},
        created_at=f"2026-11-{10 + seed:02d}T12:00:00+00:00",
    )
    values.update(overrides)
    return ResultRecord(**values)


def write_grid(out: Path, backbones=tuple(BACKBONES), tasks=tuple(TASKS), protocols=tuple(PROTOCOLS),
               seeds=(0,)) -> list[ResultRecord]:
    records = [make_record(b, t, p, s) for b in backbones for t in tasks for p in protocols for s in seeds]
    for record in records:
        write_record(out, record)
    return records
