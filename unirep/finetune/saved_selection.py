"""What a fine-tuning run selected on val, kept in the run directory as soon as selection ends, so that a failure
afterwards (in the refit or the test prediction: minutes of work later) does not cost the sweep again.

    <out>/finetune-selections/<backbone>/<key>.json          the phases' choices, the selection curve, its time
    <out>/finetune-selections/<backbone>/<key>.safetensors   the selected weights (refit=train only: they are scored)

The key is a digest of everything selection depends on: the backbone's identity, the train and val examples (ids
and labels), the number of classes, the metric, the `finetune` settings and the seed. A run with other settings or
data gets another key and selects afresh; `--force` selects afresh and overwrites. The JSON is written last and
atomically, so a file that exists is complete; one that cannot be read back is reported on stderr and ignored.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from unirep.backbones.base import Backbone
from unirep.fileio import atomic_write_bytes, atomic_write_json, sha256_json
from unirep.metrics import Metric
from unirep.results import slug
from unirep.tasks.base import ImageSet

FORMAT = 1
SELECTIONS_DIR = "finetune-selections"


@dataclass
class Selection:
    """The content of a selection file: `choices` as dicts (unirep.finetune.select.PhaseChoice), the selection
    part of the curve, its seconds, the world size it ran on, and the selected weights when they were kept."""

    choices: list[dict]
    curve: list[dict]
    select_s: float
    world_size: int
    state: dict[str, torch.Tensor] | None = None


def selection_key(backbone: Backbone, train: ImageSet, val: ImageSet, num_classes: int, metric: Metric,
                  ft: DictConfig, seed: int) -> str:
    def examples(images: ImageSet) -> str:
        return sha256_json({"ids": list(images.ids), "labels": np.asarray(images.labels).tolist()})

    return sha256_json({"format": FORMAT, "backbone": backbone.identity(), "train": examples(train),
                        "val": examples(val), "num_classes": num_classes, "metric": metric.value,
                        "finetune": OmegaConf.to_container(ft, resolve=True), "seed": seed})


class SavedSelection:
    """The selection file of one fine-tuning run (see the module docstring)."""

    def __init__(self, folder: Path, key: str, reuse: bool = True):
        self.path = folder / f"{key}.json"
        self.state_path = folder / f"{key}.safetensors"
        self.key = key
        self.reuse = reuse

    @classmethod
    def in_run_dir(cls, out: str | Path, backbone: Backbone, key: str, reuse: bool) -> SavedSelection | None:
        """The selection file under run directory `out`; None when `out` is not a directory (a protocol run outside
        the evaluation pipeline, which creates it), so nothing is written where no run lives."""
        out = Path(out)
        return cls(out / SELECTIONS_DIR / slug(backbone.name), key, reuse) if out.is_dir() else None

    def load(self, with_state: bool) -> Selection | None:
        """The saved selection, or None (none saved, reuse off, or unreadable: then a stderr line says why)."""
        if not self.reuse or not self.path.is_file():
            return None
        try:
            payload = json.loads(self.path.read_text(encoding="utf-8"))
            if payload.get("format") != FORMAT or payload.get("key") != self.key:
                raise ValueError("another format or key")
            state = None
            if with_state:
                state = load_file(str(self.state_path))
            return Selection(payload["choices"], payload["curve"], float(payload["select_s"]),
                             int(payload["world_size"]), state)
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as error:
            print(f"unirep: ignoring the saved fine-tuning selection {self.path} ({error}); selecting again",
                  file=sys.stderr)
            return None

    def save(self, selection: Selection, description: dict) -> None:
        """Write the weights (when given) first, then the JSON that makes the selection count as saved."""
        if selection.state is not None:
            tensors = {k: v.detach().cpu().contiguous() for k, v in selection.state.items()}
            atomic_write_bytes(self.state_path, save(tensors))
        atomic_write_json(self.path, {
            "format": FORMAT, "key": self.key, **description, "choices": selection.choices,
            "curve": selection.curve, "select_s": selection.select_s, "world_size": selection.world_size,
            "state_file": self.state_path.name if selection.state is not None else None,
        })
