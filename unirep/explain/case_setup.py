"""What the case-based explainers (kNN, prototypes) share: the backbone and task as `unirep eval` sees them, the
feature cache, the chosen test examples, their pixels, and the provenance every page records.

BACKBONE and key=value items are read as `unirep inspect` reads them: eval settings (max_input_size=64,
cache_dir=..., knn.ks=[5,10]) go to the run config; `prototype.KEY=VALUE` items to the prototype probe's settings.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unirep.errors import ConfigError

SECTIONS = ("prototype",)


def section_items(items: list[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """`prototype.key=value` items as {"prototype": {key: value}} (values parsed as YAML), and the other items:
    `unirep inspect`'s parser of section settings, with this command's one section."""
    from unirep.commands.inspect import section_overrides

    return section_overrides(items, list(SECTIONS))


@dataclass
class CaseSetup:
    """One backbone on one task for a case page."""

    cfg: Any
    label: str
    backbone: Any
    task: Any
    metric: Any
    cache: Any
    extraction: Any
    examples: list[int]
    seed: int
    out: Path
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    _features: dict = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return list(self.task.card.classes) or [str(i) for i in range(self.task.card.num_classes)]

    def class_name(self, label: int) -> str:
        names = self.class_names
        return names[label] if 0 <= label < len(names) else str(label)

    def split(self, name: str):
        return self.task.split(name)

    def features(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Pooled features and labels of a split, from the feature cache `unirep eval` uses."""
        if split not in self._features:
            got = self.cache.get_or_extract(self.backbone, self.task.manifest, split, self.split(split),
                                            self.extraction)
            self._features[split] = (got.features, np.asarray(got.labels))
        return self._features[split]

    def pixels(self, split: str, indices: list[int] | np.ndarray) -> torch.Tensor:
        """uint8 (N, 3, S, S): the backbone's input pixels of these examples."""
        from unirep.prototypes.maps import input_pixels

        # as feature extraction prepares them (spectrograms resized whole, images centre-cropped)
        return input_pixels(self.split(split).subset(np.asarray([int(i) for i in indices], dtype=np.int64)),
                            self.backbone)

    def provenance(self, args: argparse.Namespace, extra: dict | None = None) -> dict:
        from omegaconf import OmegaConf

        from unirep.runtime import library_versions

        test = self.split("test")
        return {"command_line": list(getattr(args, "command_line", []) or []), "backbone": self.label,
                "backbone_identity": self.backbone.identity(), "task": self.task.name,
                "split_manifest": self.task.manifest.summary(), "manifest_digest": self.task.manifest.digest,
                "split": "test", "examples": [test.ids[i] for i in self.examples], "seed": self.seed,
                "metric": self.metric.value, "eval_config": OmegaConf.to_container(self.cfg, resolve=True),
                "versions": library_versions(), **(extra or {})}


def build_setup(args: argparse.Namespace) -> CaseSetup:
    """The backbone named in args.items (exactly one), the task, the examples; bad input is one line each."""
    from unirep.commands.backbone_options import COLLECTED, backbone_entries, in_command_line_order
    from unirep.config import EvalConfig, load_config
    from unirep.evaluate import build_backbone, checked_backbone_specs, extraction_settings
    from unirep.explain import resolve_examples
    from unirep.features import FeatureCache
    from unirep.fileio import ensure_writable_dir
    from unirep.metrics import Metric
    from unirep.tasks import create_task

    items = list(args.items)
    sections, eval_items = section_items([i for i in items if "=" in i])
    dotlist = in_command_line_order(eval_items, args)
    backbones = backbone_entries(items, getattr(args, COLLECTED, None) or [])
    if len(backbones) != 1:
        raise ConfigError(f"unirep explain --protocol {args.protocol} takes one backbone, got {len(backbones)}: "
                          f"{', '.join(str(b) for b in backbones) or 'none'}")
    task = create_task(args.task)
    metric = Metric(task.card.metric)
    if task.card.multilabel or metric.needs_scores:
        raise ConfigError(f"task {args.task!r} is multi-label: the case-based pages explain single-label decisions")
    cfg = load_config(EvalConfig, None, dotlist, backbones=backbones, tasks=[task.name], out=args.out)
    (spec,) = checked_backbone_specs(cfg)
    out = ensure_writable_dir(args.out)  # before any work
    examples = resolve_examples(args.examples, list(task.split("test").ids), f"{task.name} test split")
    backbone = build_backbone(spec, cfg).eval()
    return CaseSetup(cfg=cfg, label=spec.display_name, backbone=backbone, task=task, metric=metric,
                     cache=FeatureCache(cfg.cache_dir), extraction=extraction_settings(cfg), examples=examples,
                     seed=args.seed, out=out, sections=sections)


def write_page(setup: CaseSetup, html_text: str, record: dict) -> tuple[Path, Path]:
    """explain.html and explain.json in the output folder, each written atomically."""
    from unirep.fileio import atomic_write_json, atomic_write_text

    html_path = atomic_write_text(setup.out / "explain.html", html_text)
    json_path = atomic_write_json(setup.out / "explain.json", record)
    return html_path, json_path
