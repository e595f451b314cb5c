"""Explanation metrics shared by every report that shows a saliency map: `unirep inspect`, `unirep explain`.

- Deletion and insertion curves (Petsiuk et al. 2018, RISE): pixels are removed (set to a baseline) from, or
  inserted (into a blurred copy) into, the image in the order of a map, the explained score is read at each
  fraction of pixels, and the area under each curve (trapezoid over [0, 1]) summarises it. A map that explains the
  score deletes fast (low deletion AUC) and inserts fast (high insertion AUC). `deletion_insertion_curves` takes
  any score function (a detection's score too); `deletion_insertion` is its classifier form.
- The pointing game (Zhang et al. 2016): is the map's maximum inside the ground-truth box?
- The share of the map's positive energy inside the box (Wang et al. 2020, Score-CAM's energy-based pointing game).

Boxes are xyxy in pixels, continuous coordinates: pixel (row r, column c) covers [c, c+1) x [r, r+1) and is inside
a box when its centre (c + 0.5, r + 0.5) is (`box_mask`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

CURVE_STEPS = 32

# score(i, batch) -> (B,) the explained score of image i for each perturbed copy of it in `batch` (B, C, H, W)
ScoreFunction = Callable[[int, torch.Tensor], torch.Tensor]


def insertion_start(images: torch.Tensor) -> torch.Tensor:
    """RISE's insertion substrate: a Gaussian blur (σ 5 px at 224 px, scaled to the image) of the images."""
    sigma = 5.0 * images.shape[-1] / 224.0
    kernel = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(images, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


def pixel_ranking(maps: torch.Tensor, order: str = "attribution", seed: int = 0) -> torch.Tensor:
    """(N, H*W) pixel indices, highest map value first (stable), or a seeded random order (the reference)."""
    n, h, w = maps.shape
    if order == "random":
        generator = torch.Generator().manual_seed(seed)
        return torch.stack([torch.randperm(h * w, generator=generator) for _ in range(n)]).to(maps.device)
    return torch.argsort(maps.reshape(n, -1), dim=1, descending=True, stable=True)


def deletion_insertion_curves(score: ScoreFunction, images: torch.Tensor, maps: torch.Tensor, *,
                              steps: int = CURVE_STEPS, baseline: float = 0.0, batch_size: int = 64,
                              order: str = "attribution", seed: int = 0) -> dict:
    """Deletion and insertion curves of `score` for each image, pixels ranked by `maps` (N, H, W).

    At fraction k/steps of the ranked pixels, deletion sets them (all channels) to `baseline` and insertion copies
    them into the blurred image (`insertion_start`); the steps + 1 copies of an image are scored `batch_size` at a
    time. Returns the fractions, per-image curves ("probability": the score) and their areas (trapezoid over [0, 1]).
    """
    n, _, h, w = images.shape
    ranking = pixel_ranking(maps.to(images.device), order, seed)
    # rank_of[i, p] = position of pixel p in image i's order; pixel p is changed at step k iff rank_of < count_k
    rank_of = torch.empty_like(ranking)
    rank_of.scatter_(1, ranking, torch.arange(h * w, device=images.device).expand(n, -1).contiguous())
    counts = [round(k * h * w / steps) for k in range(steps + 1)]
    blurred = insertion_start(images)
    curves = {}
    for kind in ("deletion", "insertion"):
        values = torch.empty(n, steps + 1, dtype=torch.float64)
        for i in range(n):
            changed = torch.stack([(rank_of[i] < c).reshape(1, h, w) for c in counts])  # (steps+1, 1, H, W)
            if kind == "deletion":
                batch = torch.where(changed, torch.full_like(images[i], baseline), images[i])
            else:
                batch = torch.where(changed, images[i], blurred[i])
            with torch.no_grad():
                values[i] = torch.cat([score(i, batch[j:j + batch_size]).reshape(-1).double().cpu()
                                       for j in range(0, len(batch), batch_size)])
        fractions = np.asarray(counts, dtype=np.float64) / (h * w)
        curves[kind] = {"probability": values.tolist(),
                        "auc": [float(np.trapezoid(p, fractions)) for p in values.numpy()]}
    return {"fractions": [c / (h * w) for c in counts], "order": order, **curves}


def deletion_insertion(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, maps: torch.Tensor, *,
                       steps: int = CURVE_STEPS, baseline: float = 0.0, batch_size: int = 64,
                       order: str = "attribution", seed: int = 0) -> dict:
    """Deletion and insertion curves of `model` (pixels -> class probabilities) for `targets`.

    Pixels are ranked by `maps` (highest first; order="random" ranks them at random, seeded: the reference), and
    at fraction k/steps of them: deletion sets the top-ranked pixels (all channels) to `baseline`, insertion copies
    them into the blurred image. Returns the fractions, per-image curves and their areas (trapezoid over [0, 1]).
    """
    def class_probability(i: int, batch: torch.Tensor) -> torch.Tensor:
        return model(batch)[:, targets[i]]

    return deletion_insertion_curves(class_probability, images, maps, steps=steps, baseline=baseline,
                                     batch_size=batch_size, order=order, seed=seed)


def curve_summary(curves: dict) -> dict:
    """Mean deletion/insertion curve and mean AUC over images."""
    summary = {}
    for kind in ("deletion", "insertion"):
        probabilities = np.asarray(curves[kind]["probability"])
        summary[kind] = {"mean_curve": probabilities.mean(axis=0).tolist(),
                         "mean_auc": float(np.mean(curves[kind]["auc"]))}
    return summary


def box_mask(box: torch.Tensor | tuple[float, float, float, float], height: int, width: int) -> torch.Tensor:
    """(H, W) bool: the pixels whose centre lies inside the xyxy box (edges included)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cols = torch.arange(width, dtype=torch.float64) + 0.5
    rows = torch.arange(height, dtype=torch.float64) + 0.5
    return ((rows >= y1) & (rows <= y2))[:, None] & ((cols >= x1) & (cols <= x2))[None, :]


def pointing_game(saliency: torch.Tensor, box: torch.Tensor | tuple[float, float, float, float], *,
                  tolerance: float = 0.0) -> bool | None:
    """Whether the maximum of the (H, W) map lies inside the box (grown by `tolerance` px on every side).

    Where several pixels share the maximum, a hit is any of them inside. None for a constant map (no maximum
    to point with).
    """
    saliency = saliency.detach().double().cpu()
    top = saliency.max()
    if bool(top == saliency.min()):
        return None
    x1, y1, x2, y2 = (float(v) for v in box)
    inside = box_mask((x1 - tolerance, y1 - tolerance, x2 + tolerance, y2 + tolerance), *saliency.shape)
    return bool(((saliency == top) & inside).any())


def energy_in_box(saliency: torch.Tensor, box: torch.Tensor | tuple[float, float, float, float]) -> float | None:
    """Share of the map's positive energy (sum of max(map, 0)) inside the box; None where the map has none."""
    positive = saliency.detach().double().cpu().clamp(min=0)
    total = positive.sum()
    if not bool(total > 0):
        return None
    return float((positive * box_mask(box, *positive.shape)).sum() / total)
