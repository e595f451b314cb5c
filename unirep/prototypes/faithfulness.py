"""Is the prototype probe's evidence the reason for its decision? Masking the evidence region of the top prototype
should lower the predicted class's score more than masking a random region of the same size.

For each image (the backbone's input pixels, uint8 (3, S, S)):
  1. the decision: c = argmax of the logits; the top prototype j* = the largest contribution W[c, j] s_j to c's
     logit (ties: the first);
  2. the evidence region: ProtoPNet's high-activation patch (`high_similarity_box`) of j*'s similarity map over the
     input (bicubically upsampled to S x S, the box around the pixels at or above its 95th percentile);
  3. masking: the region set to the backbone's mean colour (0 after normalisation); the random reference is a box
     of the same height and width at a uniformly drawn position (`random_draws` per image, seeded, averaged);
  4. the drop of c's logit (and of its softmax probability) under each mask.
Summary: mean drops, the mean paired difference (evidence - random) with a seeded bootstrap 95 % CI, and the share
of images where the evidence drop is larger, with its Wilson 95 % interval.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from unirep.prototypes.maps import SpatialMaps
from unirep.prototypes.model import PrototypeHead

PERCENTILE = 95.0  # ProtoPNet's find_high_activation_crop threshold
BOOTSTRAP = 2000


class PrototypeClassifier(nn.Module):
    """uint8 pixels (B, 3, S, S) -> (logits (B, K), similarity maps (B, P, h, w)): normalisation, the frozen
    backbone's maps at the probe's stage, the prototype head."""

    def __init__(self, source: SpatialMaps, head: PrototypeHead):
        super().__init__()
        self.source, self.head = source.eval(), head.eval()

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.source.data_config.normalize_batch(pixels)

    def from_normalised(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            maps = self.source.maps(x)
            return self.head(maps)[0], self.head.similarity_maps(maps)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.from_normalised(self.normalise(pixels))


def high_similarity_box(similarity: torch.Tensor, size: int, percentile: float = PERCENTILE) -> tuple[int, ...]:
    """(x1, y1, x2, y2), end-exclusive pixels: the box around the upsampled map's pixels >= its `percentile`."""
    upsampled = nn.functional.interpolate(similarity[None, None].double(), size=(size, size), mode="bicubic",
                                          align_corners=False)[0, 0]
    threshold = torch.quantile(upsampled.flatten(), percentile / 100.0)
    mask = upsampled >= threshold
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def top_prototype(logits: torch.Tensor, similarity: torch.Tensor, head: PrototypeHead) -> tuple[int, int, torch.Tensor]:
    """(predicted class, top prototype, contributions W[c] * s) of one image's logits (K,) and maps (P, h, w)."""
    predicted = int(logits.argmax())
    contributions = head.last_layer.weight[predicted].detach() * similarity.flatten(1).amax(dim=1)
    return predicted, int(contributions.argmax()), contributions


def _masked(x: torch.Tensor, box: tuple[int, ...]) -> torch.Tensor:
    x1, y1, x2, y2 = box
    out = x.clone()
    out[:, y1:y2, x1:x2] = 0.0  # the mean colour after normalisation
    return out


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def bootstrap_mean_ci(values: np.ndarray, seed: int = 0, draws: int = BOOTSTRAP) -> tuple[float, float]:
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (draws, len(values)))].mean(axis=1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def masking_check(classifier: PrototypeClassifier, pixels: torch.Tensor, *, random_draws: int = 5, seed: int = 0,
                  percentile: float = PERCENTILE) -> dict:
    """The check of the module docstring on `pixels` (N, 3, S, S) uint8; per-image values and the summary."""
    generator = torch.Generator().manual_seed(seed)
    size = pixels.shape[-1]
    rows = []
    for i in range(len(pixels)):
        x = classifier.normalise(pixels[i:i + 1])[0]
        logits, similarity = classifier.from_normalised(x[None])
        predicted, top, _ = top_prototype(logits[0], similarity[0], classifier.head)
        box = high_similarity_box(similarity[0, top], size, percentile)
        height, width = box[3] - box[1], box[2] - box[0]
        randoms = []
        for _ in range(random_draws):
            y = int(torch.randint(0, size - height + 1, (1,), generator=generator))
            x0 = int(torch.randint(0, size - width + 1, (1,), generator=generator))
            randoms.append((x0, y, x0 + width, y + height))
        batch = torch.stack([_masked(x, box)] + [_masked(x, b) for b in randoms])
        masked_logits, _ = classifier.from_normalised(batch)
        before_p = torch.softmax(logits[0].double(), 0)[predicted]
        after_p = torch.softmax(masked_logits.double(), 1)[:, predicted]
        rows.append({"predicted": predicted, "prototype": top, "box": list(box),
                     "area_share": height * width / (size * size),
                     "logit": float(logits[0, predicted]),
                     "evidence_drop": float(logits[0, predicted] - masked_logits[0, predicted]),
                     "random_drop": float((logits[0, predicted] - masked_logits[1:, predicted]).mean()),
                     "evidence_probability_drop": float(before_p - after_p[0]),
                     "random_probability_drop": float((before_p - after_p[1:]).mean())})
    return {"settings": {"percentile": percentile, "random_draws": random_draws, "seed": seed,
                         "mask": "the backbone's mean colour (0 after normalisation)",
                         "score": "the predicted class's logit (and its softmax probability)"},
            "summary": summarise(rows, seed), "images": rows}


def summarise(rows: list[dict], seed: int = 0) -> dict:
    summary: dict = {"n": len(rows), "mean_area_share": float(np.mean([r["area_share"] for r in rows])) if rows
                     else float("nan")}
    for kind in ("", "probability_"):
        evidence = np.array([r[f"evidence_{kind}drop"] for r in rows])
        random = np.array([r[f"random_{kind}drop"] for r in rows])
        difference = evidence - random
        wins = int((difference > 0).sum())
        summary["probability" if kind else "logit"] = {
            "mean_evidence_drop": float(evidence.mean()) if rows else float("nan"),
            "mean_random_drop": float(random.mean()) if rows else float("nan"),
            "mean_difference": float(difference.mean()) if rows else float("nan"),
            "difference_ci95": list(bootstrap_mean_ci(difference, seed)),
            "share_evidence_larger": wins / len(rows) if rows else float("nan"),
            "share_ci95": list(wilson_interval(wins, len(rows)))}
    return summary
