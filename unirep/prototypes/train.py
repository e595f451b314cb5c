"""Fitting the prototype probe: ProtoPNet's schedule with the backbone frozen, projection, pruning, selection on val.

One fit (`fit_prototypes`), given one candidate's hyperparameters:
  1. train the add-on layers and the prototypes (last layer fixed at ProtoPNet's +1 / -0.5 initialisation) with
     cross-entropy + cluster_weight * cluster - separation_weight * separation (ProtoPNet's warm/joint stages are
     one stage here: the backbone is frozen);
  2. project each prototype onto the nearest add-on feature vector of a fit-set patch of its own class (within its
     band for the position-aware variant; the band then recentres on the patch's row);
  3. prune duplicates: prototypes projected onto the same patch are one prototype; their last-layer columns are
     summed, so the logits do not change;
  4. fit the last layer alone on the (now fixed) similarities: cross-entropy + l1 * |negative connections|.
Accuracies before projection, right after it (same last layer) and after the last-layer fit are kept.

`PrototypeProbe.select(train, val, metric)` fits every candidate of the grid on train, scores it on val only, and
refits the best on train+val (`refit="train+val"`, like the linear probe) or keeps the train fit (`refit="train"`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from unirep.errors import ConfigError
from unirep.metrics import Metric
from unirep.prototypes.maps import MapSplit
from unirep.prototypes.model import PrototypeHead, cluster_and_separation, negative_connections_l1
from unirep.prototypes.settings import PrototypeSettings

SCORE_BATCH = 256


@dataclass
class Projection:
    """Where each prototype was projected: fit-set example index, map row and column (after pruning)."""

    example: np.ndarray
    row: np.ndarray
    col: np.ndarray
    pruned: int  # duplicates removed

    def to_dict(self) -> dict:
        return {"example": self.example.tolist(), "row": self.row.tolist(), "col": self.col.tolist(),
                "pruned": self.pruned}


@dataclass
class FittedPrototypes:
    """One fit: the final head, the head before projection, the projection, the loss curve and timings."""

    head: PrototypeHead
    head_before_projection: PrototypeHead
    head_after_projection: PrototypeHead  # projected and pruned, last layer not yet refitted
    projection: Projection
    curve: list[float]
    seconds: dict


def _batches(n: int, size: int, generator: torch.Generator | None = None):
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, size):
        yield order[start:start + size]


def class_scores(head: PrototypeHead, maps: torch.Tensor, batch_size: int = SCORE_BATCH) -> np.ndarray:
    """(N, K) logits of `head` on `maps`, in batches, without gradients."""
    head.eval()
    with torch.no_grad():
        parts = [head(maps[i:i + batch_size])[0] for i in range(0, len(maps), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, head.num_classes), np.float32)


def fit_prototypes(data: MapSplit, num_classes: int, params: dict, settings: PrototypeSettings, seed: int,
                   position_aware: bool) -> FittedPrototypes:
    """Fit one candidate on `data` (see the module docstring)."""
    start = time.perf_counter()
    _, channels, rows, cols = data.maps.shape
    head = PrototypeHead(channels, num_classes, params["prototypes_per_class"], settings.prototype_dim, (rows, cols),
                         band=settings.band if position_aware else None,
                         time_window=settings.time_window if position_aware else None, seed=seed)
    labels = torch.as_tensor(data.labels, dtype=torch.long)
    trained = [*head.add_on.parameters(), head.prototypes]
    optimiser = torch.optim.Adam(trained, lr=params["lr"])
    generator = torch.Generator().manual_seed(seed)
    curve = []
    head.train()
    for _ in range(settings.epochs):
        total = 0.0
        for index in _batches(len(labels), settings.batch_size, generator):
            logits, min_distances = head(data.maps[index])
            cluster, separation = cluster_and_separation(min_distances, labels[index], head.class_identity)
            loss = (nn.functional.cross_entropy(logits, labels[index]) + params["cluster_weight"] * cluster
                    - params["separation_weight"] * separation)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(index)
        curve.append(round(total / max(len(labels), 1), 5))
    trained_s = time.perf_counter() - start
    before = copy.deepcopy(head).eval()
    projection = project_prototypes(head, data)
    after = copy.deepcopy(head).eval()
    projected_s = time.perf_counter() - start - trained_s
    fit_last_layer(head, data, settings)
    seconds = {"train_s": round(trained_s, 3), "project_s": round(projected_s, 3),
               "last_layer_s": round(time.perf_counter() - start - trained_s - projected_s, 3)}
    return FittedPrototypes(head.eval(), before, after, projection, curve, seconds)


def project_prototypes(head: PrototypeHead, data: MapSplit, prune: bool = True) -> Projection:
    """Move every prototype onto the nearest add-on feature vector z[i, :, h, w] of a fit-set example i of its own
    class (at an allowed position: within its band), recentre its band there, then (`prune`) merge exact
    duplicates."""
    labels = torch.as_tensor(data.labels, dtype=torch.long)
    count = head.num_prototypes
    best = torch.full((count,), float("inf"))
    where = torch.zeros((count, 3), dtype=torch.long)
    vectors = head.prototypes.detach().clone()
    head.eval()
    with torch.no_grad():
        for index in _batches(len(labels), SCORE_BATCH):
            z = head.features(data.maps[index])
            distances = head.distance_maps(z)  # (B, P, H, W), +inf outside the band
            other_class = labels[index][:, None] != head.prototype_class[None, :]
            distances = distances.masked_fill(other_class[:, :, None, None], float("inf"))
            flat = distances.permute(1, 0, 2, 3).reshape(count, -1)  # (P, B*H*W)
            value, position = flat.min(dim=1)
            better = value < best
            if better.any():
                rows, cols = z.shape[2], z.shape[3]
                example, rest = position // (rows * cols), position % (rows * cols)
                row, col = rest // cols, rest % cols
                best = torch.where(better, value, best)
                where[better] = torch.stack([index[example], row, col], dim=1)[better]
                vectors[better] = z[example, :, row, col][better]
        if torch.isinf(best).any():
            missing = sorted({int(c) for c in head.prototype_class[torch.isinf(best)]})
            raise ConfigError(f"classes {missing} have no fit-set example to project their prototypes onto: every "
                              "class needs training examples")
        head.prototypes.copy_(vectors)
        head.band_row.copy_(where[:, 1])
        head.band_col.copy_(where[:, 2])
    kept = prune_duplicates(head, where) if prune else list(range(count))
    return Projection(where[kept, 0].numpy(), where[kept, 1].numpy(), where[kept, 2].numpy(), count - len(kept))


def prune_duplicates(head: PrototypeHead, where: torch.Tensor) -> list[int]:
    """Keep the first prototype of each group projected onto the same patch (same example, row, column: the same
    vector and, after recentring, the same band); add the others' last-layer columns to it, which leaves every logit
    unchanged. Returns the kept indices (the head is shrunk in place)."""
    first: dict[tuple[int, ...], int] = {}
    groups: dict[int, list[int]] = {}
    for j, key in enumerate(map(tuple, where.tolist())):
        keeper = first.setdefault(key, j)
        groups.setdefault(keeper, []).append(j)
    kept = sorted(groups)
    if len(kept) == head.num_prototypes:
        return kept
    with torch.no_grad():
        weight = head.last_layer.weight
        merged = torch.stack([weight[:, groups[j]].sum(dim=1) for j in kept], dim=1)
        keep = torch.as_tensor(kept)
        head.prototypes = nn.Parameter(head.prototypes[keep].clone())
        for name in ("prototype_class", "band_row", "band_col"):
            setattr(head, name, getattr(head, name)[keep].clone())
        head.class_identity = head.class_identity[:, keep].clone()
        head.last_layer = nn.Linear(len(kept), head.num_classes, bias=False)
        head.last_layer.weight.copy_(merged)
    return kept


def fit_last_layer(head: PrototypeHead, data: MapSplit, settings: PrototypeSettings) -> None:
    """The last layer alone on the fixed similarities: full-batch Adam on cross-entropy + l1 * negative connections."""
    if settings.last_layer_steps == 0:
        return
    head.eval()
    with torch.no_grad():
        similarities = torch.cat([head.similarities(data.maps[i:i + SCORE_BATCH])
                                  for i in range(0, len(data), SCORE_BATCH)])
    labels = torch.as_tensor(data.labels, dtype=torch.long)
    optimiser = torch.optim.Adam(head.last_layer.parameters(), lr=settings.last_layer_lr)
    for _ in range(settings.last_layer_steps):
        loss = (nn.functional.cross_entropy(head.last_layer(similarities), labels)
                + settings.l1 * negative_connections_l1(head))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def _score(metric: Metric, labels: np.ndarray, scores: np.ndarray) -> float:
    return float(metric(labels, scores.argmax(axis=1)))


class PrototypeProbe:
    """The prototype probe on cached maps; `select` is its entry point (hyperparameters on val only).

    Learned state (after `select`): `fitted_` (the FittedPrototypes scored on test), `selected_params_`,
    `val_score_`, `sweep_` (per candidate: val scores before/after projection and after the last-layer fit, pruned
    count, seconds), `fit_examples_` ("train" or "train+val": what the prototypes were projected onto).
    """

    def __init__(self, num_classes: int, settings: PrototypeSettings | None = None, position_aware: bool = False,
                 seed: int = 0):
        self.num_classes = num_classes
        self.settings = settings or PrototypeSettings()
        self.position_aware = position_aware
        self.seed = seed

    def select(self, train: MapSplit, val: MapSplit, metric: Metric) -> PrototypeProbe:
        metric = Metric(metric)
        if metric.needs_scores:
            raise ConfigError(f"the prototype probe scores single-label decisions, not metric {metric.value!r} "
                              "(multi-label): use the linear probe for this task")
        start = time.perf_counter()
        sweep, fits = [], []
        for params in self.settings.grid():
            fit = fit_prototypes(train, self.num_classes, params, self.settings, self.seed, self.position_aware)
            sweep.append({**params, **stage_scores(fit, val, metric), "pruned": fit.projection.pruned,
                          "prototypes": fit.head.num_prototypes, **fit.seconds})
            fits.append(fit)
        best = max(range(len(sweep)), key=lambda i: sweep[i]["val_after_last_layer"])  # ties: the first candidate
        self.sweep_ = sweep
        self.val_score_ = sweep[best]["val_after_last_layer"]
        self.selected_params_ = {k: sweep[best][k] for k in self.settings.grid()[0]}
        self.selection_seconds_ = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        if self.settings.refit == "train+val":
            both = MapSplit(torch.cat([train.maps, val.maps]), np.concatenate([train.labels, val.labels]))
            self.fitted_ = fit_prototypes(both, self.num_classes, self.selected_params_, self.settings, self.seed,
                                          self.position_aware)
        else:
            self.fitted_ = fits[best]
        self.fit_examples_ = self.settings.refit
        self.refit_seconds_ = round(time.perf_counter() - start, 3)
        return self

    def decision_scores(self, maps: torch.Tensor) -> np.ndarray:
        return class_scores(self.fitted_.head, maps)


def stage_scores(fit: FittedPrototypes, data: MapSplit, metric: Metric, prefix: str = "val") -> dict[str, float]:
    """`metric` on `data` before projection, after projection and after the last-layer fit."""
    return {f"{prefix}_before_projection": _score(metric, data.labels, class_scores(fit.head_before_projection,
                                                                                    data.maps)),
            f"{prefix}_after_projection": _score(metric, data.labels, class_scores(fit.head_after_projection,
                                                                                   data.maps)),
            f"{prefix}_after_last_layer": _score(metric, data.labels, class_scores(fit.head, data.maps))}
