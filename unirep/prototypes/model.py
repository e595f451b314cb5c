"""The ProtoPNet head (Chen et al. 2019, "This looks like that") on frozen spatial feature maps.

    maps (B, C, H, W) -> add-on: 1x1 conv C->D, ReLU, 1x1 conv D->D, sigmoid -> z (B, D, H, W)
    d_j(h, w) = ||z[:, :, h, w] - p_j||^2           squared L2 distance to each prototype p_j (P prototypes, P = m K)
    s_j = max over allowed (h, w) of log((d_j + 1) / (d_j + eps))        (= the similarity of the smallest distance)
    logits = W s                                    last layer (K, P), no bias, as in ProtoPNet

Allowed positions: every position (spatially invariant, the ProtoPNet default), or, for the position-aware variant
on spectrograms, only rows |h - r_j| <= band of prototype j's frequency row r_j (and, when `time_window` is set,
only columns |w - c_j| <= time_window around its time column c_j). Positions outside are given an infinite distance,
so they can never be the minimum: what lies outside a prototype's band does not change its similarity.
"""

from __future__ import annotations

import torch
from torch import nn

SIMILARITY_EPS = 1e-4  # ProtoPNet's epsilon of log((d + 1) / (d + eps))
CORRECT_CLASS_WEIGHT = 1.0  # ProtoPNet's last-layer initialisation: +1 to the own class,
INCORRECT_CLASS_WEIGHT = -0.5  # -0.5 to every other class


def similarity_from_distance(distances: torch.Tensor) -> torch.Tensor:
    return torch.log((distances + 1.0) / (distances + SIMILARITY_EPS))


class PrototypeHead(nn.Module):
    """Add-on layers, prototypes and last layer over (B, C, H, W) maps.

    Args:
        in_channels: C of the backbone's maps.
        num_classes: K.
        prototypes_per_class: m; prototype j belongs to class j // m.
        prototype_dim: D, the add-on output channels and the prototypes' length.
        map_size: (H, W) of the maps (the band masks are made for it).
        band: None (spatially invariant), or the half-width in rows of each prototype's frequency band.
        time_window: None (any time), or the half-width in columns around each prototype's time column (band only).
        seed: seed of the initialisation (add-on weights, prototypes uniform in [0, 1] as ProtoPNet's).
    """

    def __init__(self, in_channels: int, num_classes: int, prototypes_per_class: int, prototype_dim: int,
                 map_size: tuple[int, int], band: int | None = None, time_window: int | None = None, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.num_classes, self.map_size, self.band, self.time_window = num_classes, tuple(map_size), band, time_window
        self.add_on = nn.Sequential(nn.Conv2d(in_channels, prototype_dim, 1), nn.ReLU(),
                                    nn.Conv2d(prototype_dim, prototype_dim, 1), nn.Sigmoid())
        with torch.no_grad():
            for layer in self.add_on:
                if isinstance(layer, nn.Conv2d):  # ProtoPNet's kaiming-normal (fan_out, relu) add-on init
                    std = (2.0 / layer.out_channels) ** 0.5
                    layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * std)
                    layer.bias.zero_()
        count = num_classes * prototypes_per_class
        self.prototypes = nn.Parameter(torch.rand(count, prototype_dim, generator=generator))
        self.register_buffer("prototype_class", torch.arange(count) // prototypes_per_class)
        identity = nn.functional.one_hot(self.prototype_class, num_classes).T.float()  # (K, P)
        self.register_buffer("class_identity", identity)
        self.last_layer = nn.Linear(count, num_classes, bias=False)
        with torch.no_grad():
            self.last_layer.weight.copy_(CORRECT_CLASS_WEIGHT * identity + INCORRECT_CLASS_WEIGHT * (1 - identity))
        rows, cols = self.map_size
        # Before projection each class's prototypes are spread evenly over the rows (and sit in the middle column);
        # projection moves each to the row (and column) of its training patch.
        within = torch.arange(count) % prototypes_per_class
        self.register_buffer("band_row", ((within.float() + 0.5) * rows / prototypes_per_class).long().clamp_max(
            rows - 1))
        self.register_buffer("band_col", torch.full((count,), cols // 2, dtype=torch.long))

    @property
    def num_prototypes(self) -> int:
        return self.prototypes.shape[0]

    @property
    def position_aware(self) -> bool:
        return self.band is not None

    def allowed_positions(self) -> torch.Tensor | None:
        """(P, H, W) bool: where each prototype may match; None when every position is allowed."""
        if self.band is None:
            return None
        rows, cols = self.map_size
        row_ok = (torch.arange(rows, device=self.band_row.device)[None, :] - self.band_row[:, None]).abs() <= self.band
        allowed = row_ok[:, :, None].expand(-1, -1, cols)
        if self.time_window is not None:
            col_ok = (torch.arange(cols, device=self.band_col.device)[None, :]
                      - self.band_col[:, None]).abs() <= self.time_window
            allowed = allowed & col_ok[:, None, :]
        return allowed

    def features(self, maps: torch.Tensor) -> torch.Tensor:
        """z = add-on(maps), (B, D, H, W): the space prototypes live in (and are projected onto)."""
        return self.add_on(maps)

    def distance_maps(self, z: torch.Tensor) -> torch.Tensor:
        """(B, P, H, W) squared L2 distances of every position's z to every prototype; +inf outside the band."""
        flat = z.flatten(2).transpose(1, 2)  # (B, HW, D)
        distances = ((flat * flat).sum(-1, keepdim=True) - 2 * flat @ self.prototypes.T
                     + (self.prototypes * self.prototypes).sum(-1)[None, None, :]).clamp_min(0.0)
        distances = distances.transpose(1, 2).reshape(z.shape[0], -1, *z.shape[2:])
        allowed = self.allowed_positions()
        if allowed is not None:
            distances = distances.masked_fill(~allowed[None], float("inf"))
        return distances

    def forward(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, K), min distances (B, P))."""
        min_distances = self.distance_maps(self.features(maps)).flatten(2).amin(dim=2)
        return self.last_layer(similarity_from_distance(min_distances)), min_distances

    def similarities(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, P) max similarities: the last layer's input."""
        return similarity_from_distance(self.distance_maps(self.features(maps)).flatten(2).amin(dim=2))

    def similarity_maps(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, P, H, W) similarity at every position (0 outside a prototype's band)."""
        distances = self.distance_maps(self.features(maps))
        return torch.where(torch.isinf(distances), torch.zeros_like(distances), similarity_from_distance(distances))


def cluster_and_separation(min_distances: torch.Tensor, labels: torch.Tensor,
                           class_identity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ProtoPNet's costs over a batch: cluster = mean over examples of the smallest distance to a prototype of the
    example's class (pulls each example near one of its class's prototypes); separation = mean of the smallest
    distance to a prototype of another class (pushed up: its weight in the loss is negative)."""
    own = class_identity[labels].bool()  # (B, P)
    inf = torch.full_like(min_distances, float("inf"))
    cluster = torch.where(own, min_distances, inf).amin(dim=1).mean()
    separation = torch.where(own, inf, min_distances).amin(dim=1).mean()
    return cluster, separation


def negative_connections_l1(head: PrototypeHead) -> torch.Tensor:
    """L1 norm of the last-layer weights from each prototype to the classes it does not belong to (ProtoPNet's
    last-layer sparsity term: the decision should rest on positive evidence for a class)."""
    return (head.last_layer.weight * (1 - head.class_identity)).abs().sum()
