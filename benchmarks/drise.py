"""D-RISE masks per second, batched through the detector vs one masked image at a time (same masks, same maps).

The reference is measured in the same run: `drise_saliency` with batch_size=1 (every masked image its own
`detect` call) on the first --single masks, against batch_size=--batch on --masks masks, on one composed-scenes
test image (128 px). Default detector: a random-init RetinaNet with unirep's default config (MobileNetV2 + FPN);
`--detector DIR` times a trained folder (RetinaNet or YOLOv8) instead, `--detector FILE.pt` an ultralytics YOLOv8
checkpoint (through the adapter's safe loader). The maps of the shared masks are checked
equal (to float rounding) before the times are printed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/drise.py [--detector runs/detectors/retinanet] [--masks 256]
"""

from __future__ import annotations

import argparse
import time

import torch

from unirep.explain.detections.drise import DriseSettings, drise_saliency
from unirep.explain.detections.targets import targets_of


def seconds(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default=None,
                        help="a detector folder or a YOLOv8 .pt (default: random-init RetinaNet)")
    parser.add_argument("--masks", type=int, default=256, help="masks timed batched")
    parser.add_argument("--single", type=int, default=32, help="masks timed one at a time")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from unirep.tasks import create_task

    split = create_task("composed-scenes").split("test")
    if args.detector and args.detector.endswith(".pt"):  # an ultralytics YOLOv8 checkpoint, via the safe loader
        from unirep.detection.detectors.yolo import detector_from_weights

        detector = detector_from_weights(args.detector, split.classes, {}).eval()
    elif args.detector:
        from unirep.detection.detectors import load_detector

        detector = load_detector(args.detector, num_classes=len(split.classes)).eval()
    else:
        from unirep.detection.detectors.retinanet import RetinaNetDetector

        torch.manual_seed(0)
        detector = RetinaNetDetector.build(split.classes, {"pretrained_backbone": None}).eval()
    image = split.image(0)
    (found,) = detector.detect(image[None], conf=0.0, max_det=3)
    targets = targets_of(found, 0)
    batched = DriseSettings(masks=args.masks, batch_size=args.batch, baseline="none")
    single = DriseSettings(masks=args.single, batch_size=1, baseline="none")
    head = DriseSettings(masks=args.single, batch_size=args.batch, baseline="none")
    t_batched, _ = seconds(lambda: drise_saliency(detector, image, targets, batched), args.repeat)
    t_single, maps_single = seconds(lambda: drise_saliency(detector, image, targets, single), args.repeat)
    # the first `single` masks batched give the same map as one at a time (the masks do not depend on batching)
    maps_head = drise_saliency(detector, image, targets, head)
    worst = max(float((maps_single[v] - maps_head[v]).abs().max()) for v in maps_single)
    rate_batched, rate_single = args.masks / t_batched, args.single / t_single
    print(f"{detector.kind} at {image.shape[-1]} px, {len(targets)} detections, {args.threads} thread(s): "
          f"batched ({args.batch}) {rate_batched:.1f} masks/s, one at a time {rate_single:.1f} masks/s, "
          f"ratio {rate_batched / rate_single:.1f}x; same maps (max |diff| {worst:.1e})")


if __name__ == "__main__":
    main()
