"""RetinaNet training on Lightning: torchvision's losses, AdamW with linear warm-up then cosine decay, random
horizontal flips, the epoch with the best val mAP@.5 kept (ModelCheckpoint), `last.ckpt` after every epoch so a
killed run resumes where it stopped (Lightning's own resume, our own checkpoint read with weights_only=True).

The splits are read into memory once as uint8 tensors (a 600-image 128-px task is 30 MB); the val mAP is
`unirep.detection.metrics.detection_map` on `detector.detect` outputs, the same number the test split gets.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from unirep.detection.detectors.base import EVAL_CONF, EVAL_MAX_DET, stack_images
from unirep.detection.detectors.retinanet import RetinaNetDetector
from unirep.errors import ConfigError
from unirep.fileio import atomic_write_json, sha256_json

MONITOR = "val/map_50"
RUN_FILE = "run.json"


class InMemoryDetectionSet(Dataset):
    """A DetectionSet's images (uint8 (3, H, W)) and targets, decoded once."""

    def __init__(self, split, flip: bool):
        self.images = [split.image(i) for i in range(len(split))]
        self.targets = [split.target(i) for i in range(len(split))]
        self.flip = flip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image, target = self.images[index], self.targets[index]
        if self.flip and torch.rand(()) < 0.5:  # the generator is seeded by Lightning's seed_everything
            width = image.shape[-1]
            boxes = target["boxes"].clone()
            boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
            image, target = image.flip(-1), {"boxes": boxes, "labels": target["labels"]}
        return image, target


def _collate(batch):
    images, targets = zip(*batch)
    return stack_images(images), list(targets)


class RetinaNetModule(pl.LightningModule):
    def __init__(self, detector: RetinaNetDetector, lr: float, weight_decay: float, warmup_steps: int,
                 total_steps: int):
        super().__init__()
        self.detector = detector
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        self._predictions: list[dict] = []
        self._targets: list[dict] = []

    def training_step(self, batch, batch_index):
        images, targets = batch
        losses = self.detector.losses(images, targets)
        loss = sum(losses.values())
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=len(targets))
        return loss

    def validation_step(self, batch, batch_index):
        images, targets = batch
        detections = self.detector.detect(images, conf=EVAL_CONF, max_det=EVAL_MAX_DET)
        self._predictions += [d.to_dict() for d in detections]
        self._targets += targets

    def on_validation_epoch_end(self):
        from unirep.detection.metrics import detection_map

        result = detection_map(self._predictions, self._targets, num_classes=self.detector.num_classes)
        self._predictions, self._targets = [], []
        self.log_dict({MONITOR: float(result["map_50"]), "val/map": float(result["map"])}, prog_bar=True)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.detector.parameters(), lr=self.lr, weight_decay=self.weight_decay)

        def factor(step: int) -> float:
            if step < self.warmup_steps:
                return (step + 1) / self.warmup_steps
            progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def fit_retinanet(detector: RetinaNetDetector, train, val, run_dir: Path, *, epochs: int, batch_size: int,
                  lr: float, seed: int, weight_decay: float = 1e-4, progress_bar: bool = True,
                  limit_batches: int | None = None) -> dict:
    """Train `detector` in place; the best val epoch's weights are loaded into it. Returns what the fit chose."""
    from unirep.quiet import quiet_lightning
    from unirep.training.determinism import preserve_deterministic_mode

    pl.seed_everything(seed, workers=True, verbose=False)
    key = sha256_json({"config": detector.config, "classes": detector.classes, "epochs": epochs, "lr": lr,
                       "batch_size": batch_size, "seed": seed, "weight_decay": weight_decay,
                       "train": list(train.ids), "val": list(val.ids), "limit_batches": limit_batches})
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = last.is_file() and _run_key(run_dir) == key
    if last.is_file() and not resume:
        raise ConfigError(f"{run_dir} holds a RetinaNet run with other settings: choose another --out or remove it")
    atomic_write_json(run_dir / RUN_FILE, {"key": key})
    train_loader = DataLoader(InMemoryDetectionSet(train, flip=True), batch_size=batch_size, shuffle=True,
                              collate_fn=_collate, drop_last=len(train) > batch_size)
    val_loader = DataLoader(InMemoryDetectionSet(val, flip=False), batch_size=32, collate_fn=_collate)
    steps = (limit_batches or len(train_loader)) * epochs
    module = RetinaNetModule(detector, lr, weight_decay, warmup_steps=min(200, max(1, steps // 10)),
                             total_steps=steps)
    best = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=MONITOR, mode="max",
                           save_top_k=1, save_last=True, auto_insert_metric_name=False)
    limits = {"limit_train_batches": limit_batches} if limit_batches else {}
    with quiet_lightning(), preserve_deterministic_mode():
        trainer = pl.Trainer(default_root_dir=run_dir, max_epochs=epochs, accelerator="cpu", devices=1,
                             logger=CSVLogger(run_dir, name="logs", version=0), callbacks=[best],
                             enable_progress_bar=progress_bar, num_sanity_val_steps=0, enable_model_summary=False,
                             gradient_clip_val=10.0, **limits)
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if resume else None, weights_only=True)
    best_path = Path(best.best_model_path) if best.best_model_path else last
    state = torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"]
    prefix = "detector.module."
    detector.module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)},
                                    strict=True)
    detector.eval()
    score = best.best_model_score
    return {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed,
            "optimizer": "AdamW, linear warm-up then cosine (per step)", "augmentation": "horizontal flip p=0.5",
            "best_checkpoint": best_path.name, "best_val_map_50": None if score is None else float(score),
            "selected_on": MONITOR}


def _run_key(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))["key"]
    except (OSError, ValueError, KeyError):
        return None
