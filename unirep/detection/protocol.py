"""The `detection` transfer protocol: how well a frozen backbone's spatial features serve object detection.

    unirep eval mobilenetv2_100.packaged_in1k --tasks composed-scenes --protocols detection

The backbone stays frozen; its maps at the last `detection.num_levels` stages are computed once per split
(`unirep.detection.pyramid`) and held in memory, so the learning-rate sweep never runs it again. For each of
`detection.lrs` a fresh torchvision FPN + RetinaNet head (`unirep.detection.head`) trains on train with Lightning
(AdamW, cosine over `max_epochs`; in fine-tuning's processes, so `strategy=ddp devices=N` shards the batches);
val mAP@[.5:.95] every `val_every` epochs (and at the last) picks the learning rate and the epoch, whose weights are
kept; test is scored once, through the sealed test split (the prediction code sees images only).

Record: `score` = test COCO mAP@[.5:.95] in percent (metric `coco_map`), `val_score` the selected val mAP;
`extra` holds test mAP@.5 (`map_50`), mAP@.75 / small / medium / large, per-class mAP and mAP@.5, the metric's
conventions, the val sweep, the training curve and the pyramid (stages, channels, strides); the test detections
are written next to the records (`detections/<backbone>/<task>/detection-seed<seed>.json`, boxes in the images'
own pixels), so the score can be recomputed (tests/detection do, with plain pycocotools).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from unirep.config import DetectionProtocolConfig
from unirep.detection.data import DetectionSet
from unirep.detection.metrics import CONVENTIONS, detection_map
from unirep.detection.pyramid import FeaturePyramid, PyramidSplit, unscale_boxes
from unirep.errors import ConfigError
from unirep.fileio import atomic_write_json, sha256_json
from unirep.metrics import Metric
from unirep.protocols import Protocol, ProtocolOutcome, TaskImages, register_protocol
from unirep.results import slug
from unirep.tasks.base import ImageSet

PREDICT_BATCH = 32


@register_protocol("detection")
class DetectionProtocol(Protocol):
    """Frozen backbone + FPN + RetinaNet head, learning rate and epoch chosen on val (`cfg.detection`)."""

    needs_images = True

    def settings(self) -> DictConfig:
        base = OmegaConf.structured(DetectionProtocolConfig)
        return OmegaConf.merge(base, self.cfg.get("detection") or {})

    def run(self, data: TaskImages, metric: Metric, seed: int) -> ProtocolOutcome:
        if not isinstance(data.train, DetectionSet):
            raise ConfigError("the detection protocol needs a detection task (boxes per image, e.g. composed-scenes "
                              "or a COCO / YOLO card); use linear / knn / finetune for classification tasks")
        if metric != Metric.COCO_MAP:
            raise ConfigError(f"the detection protocol scores COCO box mAP (metric coco_map), not {metric.value!r}: "
                              "set metric: coco_map in the task card")
        settings = self.settings()
        check_settings(settings)
        ft = self.cfg.finetune
        classes = data.train.classes
        began = time.perf_counter()
        pyramid = FeaturePyramid(data.backbone, settings.input_size, settings.num_levels, device=_device(ft))
        train, val = pyramid.extract(data.train), pyramid.extract(data.val)
        extract_s = time.perf_counter() - began
        began = time.perf_counter()
        selected = select_on_val(pyramid, train, val, len(classes), settings, ft, seed)
        select_s = time.perf_counter() - began
        began = time.perf_counter()
        test = data.test.evaluate(lambda images: predict_images(selected.net, pyramid, images), metric)
        predict_s = time.perf_counter() - began
        summary = detection_map(list(test.predictions), list(test.labels), len(classes), classes)
        predictions_file = self._write_predictions(data, seed, test.predictions)
        return ProtocolOutcome(
            metric=metric.value,
            score=float(test.score),
            val_score=100.0 * selected.val_map,
            hyperparameters={"lr": selected.lr, "epochs": selected.epoch, "lrs": list(settings.lrs),
                             **{k: v for k, v in OmegaConf.to_container(settings).items() if k != "lrs"},
                             "optimizer": "adamw", "schedule": "cosine over max_epochs", "backbone": "frozen",
                             "head": "torchvision RetinaNet (FPN, GroupNorm head)", "augment": False},
            extra={"secondary_scores": {"mAP@.5": _percent(summary["map_50"])},
                   "map_50": _percent(summary["map_50"]), "map_75": _percent(summary["map_75"]),
                   "map_small": _percent(summary["map_small"]), "map_medium": _percent(summary["map_medium"]),
                   "map_large": _percent(summary["map_large"]), "mar_100": _percent(summary["mar_100"]),
                   "per_class": {c: {k: _percent(v) for k, v in d.items()} for c, d in summary["per_class"].items()},
                   "metric_conventions": dict(CONVENTIONS), "val_sweep": selected.sweep, "curve": selected.curve,
                   "pyramid": pyramid.describe(), "predictions_file": predictions_file,
                   "test_images": len(test.predictions)},
            timings={"extract_s": round(extract_s, 3), "select_s": round(select_s, 3),
                     "predict_s": round(predict_s, 3)},
        )

    def _write_predictions(self, data: TaskImages, seed: int, predictions) -> str | None:
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        if not data.train.task or rank_zero_only.rank != 0:
            return None
        backbone = f"{slug(data.backbone.name)}-{sha256_json(data.backbone.identity())[:8]}"
        relative = Path("detections") / backbone / slug(data.train.task) / f"detection-seed{seed}.json"
        atomic_write_json(Path(self.cfg.out) / relative, {
            "task": data.train.task, "backbone": data.backbone.name, "seed": seed,
            "boxes": "xyxy, the image's own pixels",
            "detections": [{k: v.tolist() for k, v in p.items()} for p in predictions]})
        return relative.as_posix()


def check_settings(settings: DictConfig) -> None:
    problems = []
    if not settings.lrs or any(lr <= 0 for lr in settings.lrs):
        problems.append("detection.lrs must be a non-empty list of positive learning rates")
    for key in ("max_epochs", "val_every", "batch_size", "input_size", "num_levels", "fpn_channels"):
        if int(settings[key]) < 1:
            problems.append(f"detection.{key} must be >= 1")
    if problems:
        raise ConfigError("; ".join(problems))


class Selection:
    """The best (learning rate, epoch) on val, its weights, the val sweep and the training curve."""

    def __init__(self):
        self.val_map = -1.0
        self.lr: float | None = None
        self.epoch: int | None = None
        self.state: dict | None = None
        self.sweep: dict[str, dict[str, float]] = {}
        self.curve: list[dict] = []
        self.net: torch.nn.Module | None = None


def select_on_val(pyramid: FeaturePyramid, train: PyramidSplit, val: PyramidSplit, num_classes: int,
                  settings: DictConfig, ft: DictConfig, seed: int) -> Selection:
    """Train a fresh head for each learning rate; keep the weights of the best val mAP (first best on ties)."""
    import lightning.pytorch as pl

    from unirep.detection.head import DetectionHeadModule, MapsDataModule, build_head, predict_split
    from unirep.quiet import quiet_lightning
    from unirep.training.determinism import preserve_deterministic_mode

    selection = Selection()
    epochs = int(settings.max_epochs)
    scored = sorted({e for e in range(settings.val_every, epochs + 1, settings.val_every)} | {epochs})
    for lr in settings.lrs:
        key = f"{lr:g}"
        selection.sweep[key] = {}

        def score_val(epoch: int, module, lr=lr, key=key) -> None:
            loss = module.train_losses[-1]
            entry = {"lr": lr, "epoch": epoch, "train_loss": round(loss, 5)}
            if epoch in scored:
                preds = predict_split(module.net, val, pyramid.input_size)
                value = detection_map(preds, val.targets, num_classes, per_class=False)["map"] or 0.0
                selection.sweep[key][str(epoch)] = round(100.0 * value, 4)
                entry["val_map"] = round(100.0 * value, 4)
                if value > selection.val_map:
                    selection.val_map, selection.lr, selection.epoch = value, lr, epoch
                    selection.state = copy.deepcopy(module.net.state_dict())
            selection.curve.append(entry)

        pl.seed_everything(seed, workers=True, verbose=False)
        net = build_head(pyramid.channels, pyramid.strides, num_classes, settings.fpn_channels,
                         settings.anchor_scale)
        module = DetectionHeadModule(net, pyramid.input_size, lr, settings.weight_decay, epochs, score_val)
        data = MapsDataModule(train, int(settings.batch_size), seed)
        with quiet_lightning(), preserve_deterministic_mode():
            trainer = pl.Trainer(max_epochs=epochs, accelerator=ft.accelerator, devices=ft.devices,
                                 strategy=ft.strategy, num_nodes=ft.num_nodes, deterministic=ft.deterministic,
                                 logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                 enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
            trainer.fit(module, datamodule=data)
        selection.net = net
    selection.net.load_state_dict(selection.state)
    selection.net.eval()
    return selection


def predict_images(net: torch.nn.Module, pyramid: FeaturePyramid, images: ImageSet) -> list[dict]:
    """Detections on (unlabelled) images, boxes in each image's own pixels: the sealed test's predict."""
    from unirep.detection.head import detect

    device = next(net.parameters()).device
    out: list[dict] = []
    for start in range(0, len(images), PREDICT_BATCH):
        indices = range(start, min(start + PREDICT_BATCH, len(images)))
        batch, sizes = [], []
        for i in indices:
            pixels = torch.from_numpy(np.array(images[i][0], dtype=np.uint8)).permute(2, 0, 1)
            sizes.append((int(pixels.shape[1]), int(pixels.shape[2])))
            batch.append(pyramid.to_input(pixels))
        maps = [m.to(device) for m in pyramid.maps(torch.stack(batch))]
        for found, size in zip(detect(net, maps, pyramid.input_size), sizes, strict=True):
            out.append({"boxes": unscale_boxes(found["boxes"].cpu(), size, pyramid.input_size),
                        "scores": found["scores"].cpu(), "labels": found["labels"].cpu()})
    return out


def _percent(value: float | None) -> float | None:
    return None if value is None else round(100.0 * value, 4)


def _device(ft: DictConfig) -> str:
    """Where the backbone computes the maps: this process's GPU when fine-tuning's Trainer uses GPUs, else the CPU."""
    import os

    gpu = ft.accelerator in ("gpu", "cuda") or (ft.accelerator == "auto" and torch.cuda.is_available())
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if gpu else "cpu"
