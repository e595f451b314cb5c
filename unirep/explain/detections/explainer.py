"""`unirep explain DETECTOR --task <detection task> --examples first:4 --methods drise,occlusion,gradcam,eigencam
--out DIR`: saliency maps of the detections a trained detector (a `unirep train-detector` folder) makes on chosen
test images, written to DIR/explain.html and DIR/explain.json (atomic each; the json holds every number, the
settings of every method, versions, seeds and the task manifest's digest).

The explained detections of an image are the detector's own (`detect` at --conf / --iou, at most
--max-detections); the perturbed images D-RISE and occlusion score are detected at conf 0.01 (recorded), so a
dimmed detection still counts.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
from pathlib import Path

import torch

from unirep.errors import ConfigError
from unirep.explain import Explainer, register_explainer, resolve_examples

DEFAULT_METHODS = "drise,occlusion,gradcam,eigencam"
PAGE_HTML, PAGE_JSON = "explain.html", "explain.json"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("unirep", "torch", "torchvision", "captum", "grad-cam", "timm", "ultralytics"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def check_options(args: argparse.Namespace) -> None:
    if args.masks < 1:
        raise ConfigError(f"--masks {args.masks}: D-RISE needs at least 1 mask (1000 is the default)")
    if args.conf is not None and not 0.0 <= args.conf < 1.0:
        raise ConfigError(f"--conf {args.conf}: a score threshold in [0, 1)")
    if args.iou is not None and not 0.0 < args.iou <= 1.0:
        raise ConfigError(f"--iou {args.iou}: an NMS IoU threshold in (0, 1]")
    if args.max_detections < 1:
        raise ConfigError(f"--max-detections {args.max_detections}: explain at least 1 detection per image")


def detector_path(args: argparse.Namespace) -> Path:
    from unirep.detection.detectors import is_detector_dir

    named = [item for item in args.items if "=" not in item]
    if len(named) != 1:
        raise ConfigError(f"unirep explain on a detection task takes one detector folder (from `unirep "
                          f"train-detector`), got {len(named)}: {' '.join(named) or 'none'}")
    path = Path(named[0])
    if not is_detector_dir(path):
        raise ConfigError(f"{named[0]}: not a detector folder (no detector.json): train one with `unirep "
                          "train-detector retinanet|yolov8n --task T --out DIR` and pass DIR")
    return path


@register_explainer("detections")
class DetectionExplainer(Explainer):
    help = "saliency of a detector's detections (D-RISE, occlusion, Grad-CAM, EigenCAM; category vs location maps)"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        from unirep.explain.detections.methods import DETECTION_METHODS

        group = parser.add_argument_group("detection tasks")
        group.add_argument("--methods", default=DEFAULT_METHODS,
                           help=f"comma-separated, from {', '.join(DETECTION_METHODS.list())}")
        group.add_argument("--masks", type=int, default=1000, help="D-RISE masks per image")
        group.add_argument("--conf", type=float, default=None,
                           help="score threshold of the explained detections (None: the detector's)")
        group.add_argument("--iou", type=float, default=None, help="NMS IoU threshold (None: the detector's)")
        group.add_argument("--max-detections", type=int, default=10, help="detections explained per image")

    def run(self, args: argparse.Namespace) -> int:
        from unirep.detection.detectors import load_detector
        from unirep.explain.detections.drise import DriseSettings
        from unirep.explain.detections.methods import ExplainSettings, parse_methods
        from unirep.explain.detections.occlusion import OcclusionSettings
        from unirep.tasks import create_task

        check_options(args)
        methods = parse_methods(args.methods)
        path = detector_path(args)
        task = create_task(args.task)
        split = task.split("test")
        detector = load_detector(path, num_classes=len(split.classes)).eval()
        conf = detector.default_conf if args.conf is None else args.conf
        iou = detector.default_iou if args.iou is None else args.iou
        indices = resolve_examples(args.examples, split.ids, f"{args.task} test split")
        settings = ExplainSettings(drise=DriseSettings(masks=args.masks, seed=args.seed, iou=iou),
                                   occlusion=OcclusionSettings(iou=iou))
        torch.manual_seed(args.seed)
        record = {"detector": {"path": str(path), "kind": detector.kind, "classes": list(detector.classes),
                               "weights_sha256": getattr(detector, "metadata", {}).get("weights_sha256")},
                  "task": args.task, "split": "test", "manifest_digest": task.manifest.digest,
                  "examples": [split.ids[i] for i in indices], "methods": methods,
                  "detections": {"conf": conf, "iou": iou, "max_detections": args.max_detections},
                  "settings": settings.to_dict(), "seed": args.seed, "versions": versions()}
        images, sections = [], []
        for index in indices:
            entry, section = explain_one(detector, split, index, methods, settings, conf, iou, args.max_detections)
            images.append(entry)
            sections.append(section)
        write_outputs(Path(args.out), record, images, sections, detector.kind)
        print(f"wrote {Path(args.out) / PAGE_HTML} ({sum(len(e['detections']) for e in images)} detections on "
              f"{len(images)} images)")
        return 0


def explain_one(detector, split, index: int, methods: list[str], settings, conf: float, iou: float,
                max_detections: int) -> tuple[dict, str]:
    """Explain the detections of test image `index`: (its json entry, its page section)."""
    from unirep.explain.detections.evaluate import matching_truth, truth_metrics
    from unirep.explain.detections.methods import explain_image
    from unirep.explain.detections.page import image_section
    from unirep.explain.detections.targets import targets_of

    image, truth = split.image(index), split.target(index)
    (found,) = detector.detect(image[None], conf=conf, iou=iou, max_det=max_detections)
    targets = targets_of(found, index)
    results = explain_image(detector, image, targets, methods, settings)
    detections = []
    for k, target in enumerate(targets):
        entry = target.to_dict(split.classes)
        matched = matching_truth(target, truth)
        box = None if matched is None else truth["boxes"][matched]
        entry["truth_box"] = None if box is None else [float(v) for v in box]
        entry["truth_note"] = ("none of its class overlaps it by IoU >= 0.5 (no truth-based numbers)" if box is None
                               else f"box {', '.join(f'{v:.0f}' for v in box)}")
        entry["metrics"] = {f"{m} · {v}": truth_metrics(maps[k], box) for m, r in results.items()
                            for v, maps in r.maps.items()}
        detections.append(entry)
    timings = {m: {"wall_s": r.wall_s, "cpu_s": r.cpu_s} for m, r in results.items()}
    maps = {m: r.maps for m, r in results.items()}
    section = image_section(split.ids[index], image, truth["boxes"].tolist(), detections, maps, timings)
    return {"id": split.ids[index], "detections": detections, "timings": timings}, section


def write_outputs(out: Path, record: dict, images: list[dict], sections: list[str], kind: str) -> None:
    import html

    from unirep.explain.detections.page import page
    from unirep.fileio import atomic_write_json, atomic_write_text

    lead = (f"Saliency of the detections of a {html.escape(kind)} detector on {len(images)} test images of task "
            f"{html.escape(record['task'])}, by {', '.join(record['methods'])}. Category maps explain the class "
            "score, location maps the box agreement (definitions in the configuration below and in "
            "unirep.explain.detections); pointing game and energy-in-box are against the matching ground-truth box.")
    atomic_write_json(out / PAGE_JSON, {**record, "images": images})
    atomic_write_text(out / PAGE_HTML, page(f"unirep explain: {kind} detections", lead, sections, record))
