"""Synthetic but valid OoD records for the leaderboard tests: the real OodRecord schema and writer, per-example
scores drawn per (backbone, score, set), metrics computed from them with unirep.ood.metrics (as `unirep ood` does)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from unirep.metrics import Metric
from unirep.ood.metrics import CONVENTIONS, group_means, ood_metrics
from unirep.ood.records import OodRecord, write_ood_record

OOD_BENCHMARK = "tiny-ood"
OOD_BACKBONES = {"alpha-net": 1.2, "beta-net": 0.6}  # separation of the OoD scores from the ID ones
OOD_SCORES = {"msp": 1.0, "knn": 1.5}
OOD_SETS = {"near/held-out": (160, 0.5), "far/textures": (120, 1.0), "far/digits": (90, 1.4)}
N_ID = 200


def make_ood_record(backbone: str, score: str) -> OodRecord:
    rng = np.random.default_rng(zlib.crc32(f"{backbone}/{score}".encode()))
    shift = OOD_BACKBONES[backbone] * OOD_SCORES[score]
    id_scores = rng.normal(size=N_ID).round(3)  # rounded: ties occur, as with real confidence scores
    ood = {key: (rng.normal(size=n) - shift * factor).round(3) for key, (n, factor) in OOD_SETS.items()}
    labels = rng.integers(0, 4, N_ID)
    predictions = np.where(rng.random(N_ID) < 0.8, labels, (labels + 1) % 4)
    per_set = {key: ood_metrics(id_scores, values) for key, values in ood.items()}
    metrics = {"sets": per_set, **group_means(per_set, {key: key.split("/")[0] for key in per_set})}
    return OodRecord(
        backbone=backbone, benchmark=OOD_BENCHMARK, classifier="linear", ood_score=score, paper="test",
        hyperparameters={"k": 50} if score == "knn" else {}, val_selection={}, classifier_hyperparameters={"C": 1.0},
        id_accuracy=Metric.TOP1(labels, predictions), metrics=metrics, conventions=dict(CONVENTIONS),
        benchmark_manifest={"benchmark": OOD_BENCHMARK, "counts": {"id/test": N_ID}}, timings={}, versions={},
        config={}, id_test_scores=id_scores.tolist(), id_test_labels=labels.tolist(),
        id_test_predictions=predictions.tolist(), ood_test_scores={k: v.tolist() for k, v in ood.items()},
        created_at="2026-11-20T12:00:00+00:00")


def write_ood_grid(out: Path) -> list[OodRecord]:
    records = [make_ood_record(b, s) for b in OOD_BACKBONES for s in OOD_SCORES]
    for record in records:
        write_ood_record(out, record)
    return records
