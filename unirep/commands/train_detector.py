"""`unirep train-detector retinanet|yolov8n --task T [--epochs N] [--out DIR]`: train a detector on a detection task
(or YOLO on a user's ultralytics data.yaml) and store it as a safetensors detector folder; a killed run resumes."""

from __future__ import annotations

import argparse

from unirep.commands import Command, register_command


@register_command("train-detector")
class TrainDetectorCommand(Command):
    help = ("Train a detector (torchvision RetinaNet on Lightning, or ultralytics YOLOv8n, AGPL-3.0, extra [yolo]) on "
            "a detection task and write weights.safetensors + detector.json; a killed run resumes when started again.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("detector", choices=("retinanet", "yolov8n"), help="which detector to train")
        parser.add_argument("--task", help="a detection task, e.g. composed-scenes")
        parser.add_argument("--data", help="YOLO only: a user's ultralytics data.yaml instead of --task")
        parser.add_argument("--epochs", type=int, help="training epochs (default: retinanet 12, yolov8n 60; "
                            "yolov8n 0 = import --weights and evaluate)")
        parser.add_argument("--batch-size", type=int, default=16)
        parser.add_argument("--lr", type=float, help="learning rate (default: retinanet 1e-3 AdamW; yolov8n: "
                            "ultralytics' optimizer=auto)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--weights", help="YOLO init: an ultralytics .pt (read only through its safe loader) or "
                            "a safetensors state dict; another class count is refused")
        parser.add_argument("--image-size", type=int, help="YOLO imgsz (default: the task's image side; 640 with "
                            "--data)")
        parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
        parser.add_argument("--out", help="output folder (default runs/detectors/<detector>)")

    def run(self, args: argparse.Namespace) -> int:
        from unirep.detection.detectors.training import DetectorTrainConfig, train_detector

        cfg = DetectorTrainConfig(detector=args.detector, task=args.task, data=args.data, out=args.out,
                                  epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                  weights=args.weights, image_size=args.image_size, threads=args.threads)
        result = train_detector(cfg)
        record = result.record
        test = record.get("test")
        if test:
            print(f"{args.detector} on {args.task} test: mAP@.5 {test['map_50']:.3f}  mAP@[.5:.95] {test['map']:.3f}")
        if record.get("test_ultralytics_val"):
            check = record["test_ultralytics_val"]
            print(f"ultralytics val() on the same weights: mAP@.5 {check['map_50']:.3f}  mAP@[.5:.95] "
                  f"{check['map']:.3f}")
        seconds = record.get("seconds", {})
        if seconds:
            print(f"trained in {seconds['wall']:.0f} s wall, {seconds['cpu']:.0f} s CPU")
        print(f"detector {result.out} (weights.safetensors + detector.json); as a backbone: "
              f"unirep eval detector:{result.out} --tasks opencv-digits --protocols linear")
        return 0
