"""Compare the detection-explanation methods, measured: per method x variant x detector, the deletion and insertion
AUC of the detection's score, the pointing game and the share of saliency energy inside the ground-truth box, and
the wall / CPU seconds per explained detection.

Detections: the true positives (same class as a ground-truth box, IoU >= 0.5) the detector keeps at its default
conf on the test images, in manifest order, until --detections of them are collected (whole images: every true
positive of an image is explained with one set of D-RISE masks / occluded copies). Two reference maps sit in the
table: `random` (uniform noise, seeded) and `own box` (1 inside the detected box, 0 outside: what a map that only
restates the detection scores on the truth-based metrics).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/detection_explanations_study.py \
        --detector retinanet=runs/detectors/retinanet --detector yolov8n=runs/detectors/yolov8n \
        --task composed-scenes --detections 24 --masks 500 --out runs/detection-explanations

Writes OUT/study.json (every per-detection number, the settings, versions) and OUT/table.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from unirep.detection.detectors import load_detector
from unirep.explain.detections.drise import DriseSettings
from unirep.explain.detections.evaluate import faithfulness, matching_truth, truth_metrics
from unirep.explain.detections.explainer import versions
from unirep.explain.detections.methods import DETECTION_METHODS, ExplainSettings, explain_image
from unirep.explain.detections.occlusion import OcclusionSettings
from unirep.explain.detections.targets import targets_of
from unirep.fileio import atomic_write_json, atomic_write_text
from unirep.tasks import create_task


def reference_maps(targets, height: int, width: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    own = torch.zeros(len(targets), height, width, dtype=torch.float64)
    for k, target in enumerate(targets):
        from unirep.explanation_metrics import box_mask

        own[k] = box_mask(target.box, height, width).double()
    return {"random": torch.rand(len(targets), height, width, generator=generator, dtype=torch.float64),
            "own box": own}


def open_detector(path: str, classes: tuple[str, ...]):
    """A `unirep train-detector` folder, or an ultralytics YOLOv8 `.pt` (read through ultralytics' safe loader by
    the YOLO adapter: a training still running has only its epoch checkpoints)."""
    if path.endswith(".pt"):
        from unirep.detection.detectors.yolo import detector_from_weights

        return detector_from_weights(path, classes, {}).eval()
    return load_detector(path, num_classes=len(classes)).eval()


def study_detector(name: str, folder: str, split, args, settings: ExplainSettings) -> list[dict]:
    detector = open_detector(folder, split.classes)
    rows, collected = [], 0
    for index in range(args.first_image, len(split)):
        if collected >= args.detections:
            break
        image, truth = split.image(index), split.target(index)
        (found,) = detector.detect(image[None], max_det=args.max_detections)
        targets = [t for t in targets_of(found, index) if matching_truth(t, truth) is not None]
        targets = targets[:args.detections - collected]
        if not targets:
            continue
        results = explain_image(detector, image, targets, DETECTION_METHODS.list(), settings)
        maps = {f"{m} · {v}": values for m, r in results.items() for v, values in r.maps.items()}
        maps.update({f"reference · {k}": v for k, v in reference_maps(targets, *image.shape[-2:], index).items()})
        cost = {m: {"wall_s": r.wall_s / len(targets), "cpu_s": r.cpu_s / len(targets)} for m, r in results.items()}
        for k, target in enumerate(targets):
            box = truth["boxes"][matching_truth(target, truth)]
            for key, values in maps.items():
                method = key.split(" · ")[0]
                row = {"detector": name, "image": split.ids[index], "detection": k, "map": key,
                       "score": target.score, **truth_metrics(values[k], box),
                       **{m: v for m, v in faithfulness(detector, image, target, values[k], steps=args.steps).items()
                          if m.endswith("auc")}}
                row.update(cost.get(method, {"wall_s": None, "cpu_s": None}))
                rows.append(row)
        collected += len(targets)
        print(f"{name}: {collected}/{args.detections} detections ({split.ids[index]}; "
              + ", ".join(f"{m} {c['wall_s']:.1f}s" for m, c in cost.items()) + " per detection)", flush=True)
    return rows


def mean_of(rows: list[dict], field: str) -> float | None:
    """Mean of the defined values (a constant map has no pointing-game value; a reference map no time)."""
    values = [r[field] for r in rows if r[field] is not None]
    return float(np.mean(values)) if values else None


def summarise(rows: list[dict]) -> list[dict]:
    table = []
    for detector in dict.fromkeys(r["detector"] for r in rows):
        for key in dict.fromkeys(r["map"] for r in rows if r["detector"] == detector):
            chosen = [r for r in rows if r["detector"] == detector and r["map"] == key]
            table.append({"detector": detector, "map": key, "n": len(chosen),
                          **{field: mean_of(chosen, field) for field in ("deletion_auc", "insertion_auc",
                                                                         "pointing_game", "energy_in_box", "wall_s",
                                                                         "cpu_s")}})
    return table


def markdown(table: list[dict]) -> str:
    cell = lambda v, f=".3f": "–" if v is None else format(v, f)  # noqa: E731
    lines = ["| detector | map | n | deletion AUC ↓ | insertion AUC ↑ | pointing game ↑ | energy in box ↑ | "
             "wall s / det. | CPU s / det. |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['detector']} | {r['map']} | {r['n']} | {cell(r['deletion_auc'])} | {cell(r['insertion_auc'])} | "
              f"{cell(r['pointing_game'], '.0%')} | {cell(r['energy_in_box'])} | {cell(r['wall_s'], '.2f')} | "
              f"{cell(r['cpu_s'], '.2f')} |" for r in table]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", action="append", required=True, metavar="NAME=FOLDER|FILE.pt")
    parser.add_argument("--task", default="composed-scenes")
    parser.add_argument("--detections", type=int, default=24)
    parser.add_argument("--max-detections", type=int, default=10)
    parser.add_argument("--masks", type=int, default=500)
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/detection-explanations")
    parser.add_argument("--first-image", type=int, default=0, help="test image to start the search at")
    parser.add_argument("--include", action="append", default=[], metavar="STUDY.json",
                        help="rows of an earlier run (same settings, other images) summarised with this run's")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = create_task(args.task)
    split = task.split("test")
    settings = ExplainSettings(drise=DriseSettings(masks=args.masks, seed=args.seed), occlusion=OcclusionSettings())
    started = time.perf_counter()
    rows = []
    for earlier in args.include:
        import json

        rows += json.loads(Path(earlier).read_text())["rows"]
    for item in args.detector:
        name, _, folder = item.partition("=")
        rows += study_detector(name, folder, split, args, settings)
    table = summarise(rows)
    out = Path(args.out)
    atomic_write_json(out / "study.json", {"task": args.task, "manifest_digest": task.manifest.digest,
                                           "detectors": args.detector, "included": args.include,
                                           "first_image": args.first_image,
                                           "settings": settings.to_dict(), "detections": args.detections,
                                           "curve_steps": args.steps, "threads": args.threads,
                                           "versions": versions(), "wall_s": time.perf_counter() - started,
                                           "table": table, "rows": rows})
    atomic_write_text(out / "table.md", markdown(table))
    print(markdown(table))


if __name__ == "__main__":
    main()
