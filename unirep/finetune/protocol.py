"""The `finetune` protocol: train the backbone with a linear head on the task's images, learning rate and epochs
chosen on val, scored once on the sealed test split; same record schema as the probes.

Names: `finetune` (mode from `finetune.mode`), `finetune-full`, `finetune-lp-ft`, `finetune-last-k` (k from
`finetune.last_k`) and `finetune-last-<k>`, so one run can compare modes side by side with the probes:

    unirep eval mobilenetv2_100.packaged_in1k --tasks sklearn-digits --protocols linear,knn,finetune,finetune-lp-ft

Record fields: `hyperparameters` holds the selected `lr` and `epochs` (of the last phase) and every phase's choice,
the refit policy and the training settings (with the optimiser's weight-decay rule, unirep.training.optim);
`extra["curve"]` the training curve (one entry per epoch of every fit: phase, selection or refit, candidate
learning rate, train loss, val score); `extra["selection"]` the selection file in the run directory and whether
this record's selection was read from it (unirep.finetune.saved_selection); `timings` the seconds of selection
(as measured when it ran), refit and test prediction.
"""

from __future__ import annotations

import functools
import re
import time

import numpy as np
from omegaconf import DictConfig, OmegaConf

from unirep.errors import ConfigError
from unirep.metrics import Metric
from unirep.protocols import PROTOCOLS, Protocol, ProtocolOutcome, TaskImages, register_protocol
from unirep.tasks.base import ImageSet
from unirep.training.optim import WEIGHT_DECAY_RULE

PREDICT_BATCH = 256


@register_protocol("finetune")
class FineTuneProtocol(Protocol):
    """Fine-tuning with `cfg.finetune` (see unirep.config.FineTuneConfig); `mode`/`last_k` override it."""

    needs_images = True

    def __init__(self, cfg: DictConfig, mode: str | None = None, last_k: int | None = None):
        super().__init__(cfg)
        self.mode, self.last_k = mode, last_k

    def settings(self) -> DictConfig:
        """The `finetune` section with this protocol's mode (and k) applied."""
        ft = OmegaConf.merge(self.cfg.finetune, {})
        if self.mode is not None:
            ft.mode = self.mode
        if self.last_k is not None:
            ft.last_k = self.last_k
        return ft

    def run(self, data: TaskImages, metric: Metric, seed: int) -> ProtocolOutcome:
        from unirep.finetune.saved_selection import SavedSelection, selection_key
        from unirep.finetune.select import finetune

        if metric.needs_scores:
            raise ConfigError(f"fine-tuning trains a softmax head and cannot score metric {metric.value!r} "
                              "(multi-label): use the linear probe for this task")
        ft = self.settings()
        key = selection_key(data.backbone, data.train, data.val, data.num_classes, metric, ft, seed)
        saved = SavedSelection.in_run_dir(self.cfg.out, data.backbone, key, reuse=not self.cfg.force)
        result = finetune(data.backbone, data.train, data.val, data.num_classes, metric, ft, seed, saved)
        start = time.perf_counter()
        test = data.test.evaluate(functools.partial(_predict, result.net, ft), metric)
        timings = {**{k: round(v, 3) for k, v in result.timings.items()},
                   "predict_s": round(time.perf_counter() - start, 3)}
        last = result.choices[-1]
        return ProtocolOutcome(
            metric=metric.value,
            score=float(test.score),
            val_score=float(last.val_score),
            hyperparameters=_hyperparameters(ft, result, data.backbone.data_config.input_size),
            test_labels=test.labels.tolist(),
            test_predictions=test.predictions.tolist(),
            extra={"curve": result.curve, "val_sweep": last.sweep,
                   "phase_sweeps": {c.phase: c.sweep for c in result.choices},
                   "trained_stages": {c.phase: c.trained_stages for c in result.choices},
                   "world_size": result.world_size,
                   "selection": {"file": None if saved is None else saved.path.relative_to(self.cfg.out).as_posix(),
                                 "resumed": result.selection_resumed}},
            timings=timings,
        )


def _predict(net, ft: DictConfig, images: ImageSet) -> np.ndarray:
    import torch

    from unirep.finetune.module import predict_scores
    from unirep.finetune.select import uses_gpu
    from unirep.training.data import cache_split

    split = cache_split(images, net.backbone.data_config, f"test @{net.backbone.data_config.input_size}px")
    device = torch.device("cuda" if uses_gpu(ft) else "cpu")
    return predict_scores(net, split.images, PREDICT_BATCH, device)


def _hyperparameters(ft: DictConfig, result, input_size: int) -> dict:
    last = result.choices[-1]
    augment = ({k: OmegaConf.to_container(ft)[k] for k in ("scale", "ratio", "hflip", "color_jitter", "auto_augment")}
               if ft.augment else False)
    params = {
        "mode": ft.mode, "lr": last.lr, "epochs": last.epochs, "refit": result.refit,
        "phases": [_phase_entry(c) for c in result.choices],
        "max_epochs": ft.max_epochs, "patience": ft.patience, "optimizer": ft.optimizer, "momentum": ft.momentum,
        "weight_decay": ft.weight_decay, "weight_decay_rule": WEIGHT_DECAY_RULE,
        "warmup_epochs": ft.warmup_epochs, "label_smoothing": ft.label_smoothing,
        "batch_size": ft.batch_size, "input_size": input_size, "augment": augment, "precision": result.precision,
        "bn_stats": "frozen" if any(p.freeze_bn_stats for p in result.phases) else "train",
    }
    if ft.mode == "last-k":
        params["last_k"] = ft.last_k
    if ft.mode == "lp-ft":
        params.update(lp_head=ft.lp_head, lpft_lr_factor=ft.lpft_lr_factor)
        if ft.lp_head == "sgd":
            params.update(lp_lrs=list(ft.lp_lrs), lp_max_epochs=ft.lp_max_epochs)
    return params


def _phase_entry(choice) -> dict:
    if choice.C is not None:  # the linear-probe head of LP-FT
        return {"phase": choice.phase, "C": choice.C}
    return {"phase": choice.phase, "lr": choice.lr, "epochs": choice.epochs, "lrs": choice.lrs}


for _mode in ("full", "lp-ft", "last-k"):
    PROTOCOLS.add(f"finetune-{_mode}", functools.partial(FineTuneProtocol, mode=_mode))

LAST_K_NAME = re.compile(r"^finetune-last-(?P<k>\d+)$")


def resolve_last_k_protocol(name: str):
    """`finetune-last-<k>`: last-k fine-tuning with that k."""
    match = LAST_K_NAME.match(name)
    if not match or int(match["k"]) < 1:
        return None
    return functools.partial(FineTuneProtocol, mode="last-k", last_k=int(match["k"]))


PROTOCOLS.add_fallback(resolve_last_k_protocol)
