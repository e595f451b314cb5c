"""The prototype probe's settings: a plain dataclass (no torch), so the run config can hold it as its `prototype`
section (`unirep.config.EvalConfig`) without importing the probe."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

from unirep.errors import ConfigError


@dataclass
class PrototypeSettings:
    """The prototype probe's settings. Grid (every combination is a candidate, scored on val): `lrs` x
    `prototypes_per_class` x `cost_weights` ([cluster, separation] pairs; ProtoPNet uses [0.8, 0.08]).

    `band`: half-width in map rows of each prototype's frequency band (`prototype-band` only); `time_window`: also
    restrict each prototype to +-this many columns around its time column (None: any time). `layer` / `min_rows`:
    which stage's maps (unirep.prototypes.maps). `refit`: "train+val" or "train". `faithfulness_images`: the
    first N (unlabelled) test images of the masking check (unirep.prototypes.faithfulness) in the record."""

    layer: str | None = None
    min_rows: int = 7
    lrs: list[float] = field(default_factory=lambda: [0.003, 0.01])
    prototypes_per_class: list[int] = field(default_factory=lambda: [3])
    cost_weights: list[list[float]] = field(default_factory=lambda: [[0.8, 0.08], [0.2, 0.02]])
    prototype_dim: int = 64
    epochs: int = 15
    batch_size: int = 64
    last_layer_steps: int = 300
    last_layer_lr: float = 0.01
    l1: float = 1e-4
    band: int = 1
    time_window: int | None = None
    refit: str = "train+val"
    faithfulness_images: int = 100  # test images of the masking check the protocol records (0: none)
    faithfulness_draws: int = 3  # random same-size boxes per image

    def grid(self) -> list[dict]:
        self.check()
        return [{"lr": float(lr), "prototypes_per_class": int(m), "cluster_weight": float(c),
                 "separation_weight": float(s)}
                for lr, m, (c, s) in itertools.product(self.lrs, self.prototypes_per_class, self.cost_weights)]

    def check(self) -> None:
        problems = []
        if not self.lrs or any(not lr > 0 for lr in self.lrs):
            problems.append(f"lrs must be a non-empty list of numbers > 0, got {self.lrs!r}")
        if not self.prototypes_per_class or any(int(m) < 1 for m in self.prototypes_per_class):
            problems.append(f"prototypes_per_class must be a non-empty list of integers >= 1, got "
                            f"{self.prototypes_per_class!r}")
        if not self.cost_weights or any(len(pair) != 2 for pair in self.cost_weights):
            problems.append(f"cost_weights must be a list of [cluster, separation] pairs, got {self.cost_weights!r}")
        if self.band < 0 or (self.time_window is not None and self.time_window < 0):
            problems.append(f"band and time_window must be >= 0, got {self.band!r} and {self.time_window!r}")
        if self.refit not in ("train+val", "train"):
            problems.append(f"refit must be train+val or train, got {self.refit!r}")
        if self.faithfulness_images < 0 or self.faithfulness_draws < 1:
            problems.append("faithfulness_images must be >= 0 and faithfulness_draws >= 1")
        if min(self.epochs, self.batch_size, self.prototype_dim, self.min_rows) < 1 or self.last_layer_steps < 0:
            problems.append("epochs, batch_size, prototype_dim and min_rows must be >= 1, last_layer_steps >= 0")
        if problems:
            raise ConfigError(f"prototype settings: {'; '.join(problems)} (set prototype.KEY=VALUE)")

    def to_dict(self) -> dict:
        return asdict(self)
