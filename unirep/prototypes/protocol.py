"""The `prototype` and `prototype-band` protocols: the prototype probe (unirep.prototypes.train) on a frozen
backbone's spatial maps, with the same record schema as `linear` and `knn`, so they sit on one leaderboard.

    unirep eval mobilenetv2_100.packaged_in1k --input-size 128 --tasks opencv-digits --protocols linear,knn,prototype

`prototype`: spatially invariant (a prototype matches anywhere, ProtoPNet's max over all positions).
`prototype-band`: position-aware for spectrograms: prototype j matches only in map rows r_j +- band (its frequency
band; r_j is the row of the training patch it was projected onto), at any time column unless `time_window` is set.

Settings: the run config's `prototype` section when it has one (`prototype.lrs=[0.01]`), else PrototypeSettings'
defaults. Record: `hyperparameters` = the selected candidate + every setting + the layer and map shape;
`extra` = the val sweep (each candidate's val scores before / after projection and after the last-layer fit, pruned
count, seconds), the test scores of the selected model before and after projection (the record's `score` is the
final one; the others are reported, never selected on), the projection (fit-set example ids, rows, columns), and
the masking faithfulness check on the first `faithfulness_images` test images (it needs no label).
The test split is scored once, sealed (`SealedImages`): the maps of its unlabelled images are computed inside the
prediction function.
"""

from __future__ import annotations

import functools
import time
from dataclasses import fields

import numpy as np
from omegaconf import DictConfig, OmegaConf

from unirep.errors import ConfigError
from unirep.features import ExtractionSettings, FeatureCache
from unirep.metrics import Metric
from unirep.protocols import Protocol, ProtocolOutcome, TaskImages, register_protocol
from unirep.prototypes.faithfulness import PrototypeClassifier, masking_check
from unirep.prototypes.maps import MapSplit, SpatialMaps, choose_stage, input_pixels, split_maps
from unirep.prototypes.settings import PrototypeSettings
from unirep.prototypes.train import PrototypeProbe, class_scores
from unirep.tasks.base import ImageSet


def prototype_settings(cfg: DictConfig | None) -> PrototypeSettings:
    """PrototypeSettings from the config's `prototype` section (absent: the defaults); unknown keys refused."""
    section = OmegaConf.select(cfg, "prototype", default=None) if cfg is not None else None
    return settings_from_dict(OmegaConf.to_container(section, resolve=True) if section is not None else {})


def settings_from_dict(given: dict) -> PrototypeSettings:
    """PrototypeSettings with `given` over the defaults; unknown keys and bad values refused in one line."""
    valid = {f.name for f in fields(PrototypeSettings)}
    unknown = sorted(set(given) - valid)
    if unknown:
        raise ConfigError(f"prototype settings {unknown} do not exist: valid are {', '.join(sorted(valid))}")
    settings = PrototypeSettings(**given)
    settings.check()
    return settings


@functools.lru_cache(maxsize=8)
def _task(name: str):
    from unirep.tasks import create_task

    return create_task(name)


def task_of(images: TaskImages, cfg: DictConfig):
    """The run task whose split manifest holds exactly these train/val/test examples (its manifest keys the map
    cache and its card may fix the feature layer), or None (image sets built by hand: maps kept in memory only)."""
    from unirep.tasks import resolve_tasks

    wanted = {"train": list(images.train.ids), "val": list(images.val.ids)}
    sizes = {"train": len(images.train), "val": len(images.val), "test": len(images.test)}
    for name in resolve_tasks(list(OmegaConf.select(cfg, "tasks", default=[]) or [])):
        task = _task(name)
        if dict(task.card.counts) != sizes and task.manifest.counts != sizes:
            continue
        if all(task.manifest.splits[s] == ids for s, ids in wanted.items()):
            return task
    return None


# Maps of hand-built image sets and of the sealed test images, per process (no manifest key to file them under).
_MEMORY: dict[tuple, MapSplit] = {}


def _maps(source: SpatialMaps, images: ImageSet, split: str, settings: ExtractionSettings, cache: FeatureCache | None,
          task) -> MapSplit:
    if task is not None and cache is not None:
        return split_maps(source, images, settings, cache, task.manifest, split)
    key = (repr(source.identity()), split, tuple(images.ids))
    if key not in _MEMORY:
        _MEMORY[key] = split_maps(source, images, settings)
    return _MEMORY[key]


@register_protocol("prototype")
class PrototypeProtocol(Protocol):
    """The spatially invariant prototype probe (see the module docstring)."""

    needs_images = True
    position_aware = False

    def run(self, data: TaskImages, metric: Metric, seed: int) -> ProtocolOutcome:
        from unirep.evaluate import extraction_settings

        settings = prototype_settings(self.cfg)
        task = task_of(data, self.cfg)
        card_layer = task.card.extra.get("feature_layer") if task is not None else None
        stage, stage_name = choose_stage(data.backbone, settings.layer or card_layer, settings.min_rows)
        source = SpatialMaps(data.backbone, stage, stage_name)
        extraction = extraction_settings(self.cfg)
        cache = FeatureCache(self.cfg.cache_dir) if OmegaConf.select(self.cfg, "cache_dir") else None
        start = time.perf_counter()
        train = _maps(source, data.train, "train", extraction, cache, task)
        val = _maps(source, data.val, "val", extraction, cache, task)
        extract_s = time.perf_counter() - start
        probe = PrototypeProbe(data.num_classes, settings, self.position_aware, seed).select(train, val, metric)
        fitted = probe.fitted_
        before: dict[str, np.ndarray] = {}
        faithfulness: dict = {}

        def predict(images: ImageSet) -> np.ndarray:
            # (the sealed split's unlabelled set keeps `whole_image`, so test maps are prepared as the train maps)
            # kept in memory only (labels hidden, never cached under the split's key): the seeds and the band
            # variant of one run share one forward pass over the test images
            maps = _maps(source, images, "test (unlabelled)", extraction, None, None).maps
            before["before_projection"] = class_scores(fitted.head_before_projection, maps)
            before["after_projection"] = class_scores(fitted.head_after_projection, maps)
            if settings.faithfulness_images:  # needs no label: the predicted class's score under masking
                started = time.perf_counter()
                count = min(settings.faithfulness_images, len(images))
                pixels = input_pixels(images.subset(np.arange(count)), source)  # subsets keep whole_image
                check = masking_check(PrototypeClassifier(source, fitted.head), pixels,
                                      random_draws=settings.faithfulness_draws, seed=seed)
                faithfulness.update(summary=check["summary"], settings=check["settings"],
                                    seconds=round(time.perf_counter() - started, 3))
            return probe.decision_scores(maps)

        start = time.perf_counter()
        test = data.test.evaluate(predict, metric)
        predict_s = time.perf_counter() - start
        labels = np.asarray(test.labels)
        fit_ids = list(data.train.ids) + (list(data.val.ids) if probe.fit_examples_ == "train+val" else [])
        projection = fitted.projection
        return ProtocolOutcome(
            metric=metric.value,
            score=float(test.score),
            val_score=float(probe.val_score_),
            hyperparameters={**probe.selected_params_, "settings": settings.to_dict(), "layer": stage_name,
                             "map_shape": list(source.map_shape), "position_aware": self.position_aware,
                             "similarity": "log((d+1)/(d+1e-4)), d squared L2 on the add-on output",
                             "refit": probe.fit_examples_},
            test_labels=labels.tolist(),
            test_predictions=np.asarray(test.predictions).tolist(),
            extra={"val_sweep": probe.sweep_,
                   "test_before_projection": float(metric(labels, before["before_projection"].argmax(1))),
                   "test_after_projection": float(metric(labels, before["after_projection"].argmax(1))),
                   "test_after_last_layer": float(test.score),
                   "prototypes": fitted.head.num_prototypes, "pruned": projection.pruned,
                   "projection": {"example_ids": [fit_ids[i] for i in projection.example],
                                  "row": projection.row.tolist(), "col": projection.col.tolist(),
                                  "band_rows": fitted.head.band if self.position_aware else None},
                   "curve": fitted.curve, "maps_cached": task is not None and cache is not None,
                   "faithfulness": faithfulness or None},
            timings={"extract_maps_s": round(extract_s, 3), "selection_s": probe.selection_seconds_,
                     "refit_s": probe.refit_seconds_, "predict_s": round(predict_s, 3), **fitted.seconds},
        )


@register_protocol("prototype-band")
class BandPrototypeProtocol(PrototypeProtocol):
    """Position-aware prototypes for spectrograms: each keeps its frequency band (see the module docstring)."""

    position_aware = True
