"""D-RISE (Petsiuk et al. 2021, "Black-box explanation of object detectors via saliency maps"), written here.

Masks (RISE's recipe, Petsiuk et al. 2018): N binary grids of `resolution` x `resolution` cells, each cell kept with
probability p, upsampled bilinearly to (resolution + 1) cells of ceil(H / resolution) px and cropped to H x W at a
random shift of less than one cell (so the soft edges fall anywhere). Every masked image (pixels x mask, black
where masked) goes through the detector, `batch_size` at a time; for each target detection the masked image gets
the weight w_i of `targets.drise_weights` (full / category / location), and

    saliency = sum_i w_i M_i / (N p)

(RISE's normalisation: a weight that ignores the mask gives a map equal to that weight everywhere), the paper's map
(`baseline="none"`). The default, `baseline="mean"`, subtracts the mean weight w_bar of the N masked images:

    saliency = sum_i (w_i - w_bar) M_i / (N p)

In expectation this is the paper's map minus the constant w_bar (E[M_i] = p), so the ranking of pixels, the pointing
game and deletion/insertion are those of the same expected map; but the paper's estimate carries w_bar times the
masks' own pixel-to-pixel density noise (sum_i M_i / (N p) - 1, std ~ sqrt((1 - p) / (N p))), which swamps a term
whose weights vary little (a location map whose IoUs stay within 0.6-1): with the mean removed the noise scales with
the weights' spread, not their level. One set of masked forwards serves every detection of an image.
All draws come from one `torch.Generator` seeded with `seed` (grids first, then the shifts), so the masks depend on
(N, resolution, p, size, seed) only, not on the batching.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from unirep.detection.detectors.base import Detector
from unirep.explain.detections.targets import (
    MATCH_IOU,
    VARIANTS,
    DetectionTarget,
    detect_in_batches,
    drise_weights,
)


@dataclass(frozen=True)
class DriseSettings:
    """Everything a D-RISE map depends on besides the detector and the image (recorded with every map)."""

    masks: int = 1000
    resolution: int = 16
    p: float = 0.5
    seed: int = 0
    batch_size: int = 32
    conf: float = 0.01  # detections of the masked images kept above this score (low: a dimmed object still counts)
    iou: float = 0.5  # NMS IoU of the masked images' detections
    max_det: int = 100
    match_iou: float = MATCH_IOU
    baseline: str = "mean"  # "mean": subtract the mean weight (a control variate); "none": the paper's sum

    def __post_init__(self):
        if self.baseline not in ("mean", "none"):
            raise ValueError(f"D-RISE baseline must be 'mean' or 'none', got {self.baseline!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def mask_draws(settings: DriseSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeded draws: (N, s, s) kept cells and (N, 2) shifts in [0, 1) of a cell (rows, columns)."""
    generator = torch.Generator().manual_seed(settings.seed)
    cells = torch.rand(settings.masks, settings.resolution, settings.resolution, generator=generator) < settings.p
    shifts = torch.rand(settings.masks, 2, generator=generator)
    return cells, shifts


def masks_from_draws(cells: torch.Tensor, shifts: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(n, 1, H, W) float masks in [0, 1] from the draws (bilinear upsampling, then the shifted crop)."""
    resolution = cells.shape[-1]
    cell_h, cell_w = math.ceil(height / resolution), math.ceil(width / resolution)
    grown = torch.nn.functional.interpolate(cells[:, None].float(), size=((resolution + 1) * cell_h,
                                                                          (resolution + 1) * cell_w),
                                            mode="bilinear", align_corners=False)
    rows = (shifts[:, 0] * cell_h).long()
    cols = (shifts[:, 1] * cell_w).long()
    return torch.stack([grown[i, :, r:r + height, c:c + width] for i, (r, c) in enumerate(zip(rows.tolist(),
                                                                                             cols.tolist()))])


def drise_masks(settings: DriseSettings, height: int, width: int) -> torch.Tensor:
    """All N masks (N, 1, H, W) at once (for tests and small N; `drise_saliency` builds them a batch at a time)."""
    cells, shifts = mask_draws(settings)
    return masks_from_draws(cells, shifts, height, width)


def masked_images(image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) image x (n, 1, H, W) masks -> uint8 (n, 3, H, W), rounded."""
    return (image.float()[None] * masks).round().clamp(0, 255).to(torch.uint8)


def drise_saliency(detector: Detector, image: torch.Tensor, targets: list[DetectionTarget],
                   settings: DriseSettings) -> dict[str, torch.Tensor]:
    """D-RISE maps of `targets` (detections of the uint8 (3, H, W) `image`): {variant: (T, H, W) float64}."""
    height, width = image.shape[-2:]
    if not targets:
        return {v: torch.zeros(0, height, width, dtype=torch.float64) for v in VARIANTS}
    cells, shifts = mask_draws(settings)
    sums = {v: torch.zeros(len(targets), height * width, dtype=torch.float64) for v in VARIANTS}
    weight_sums = {v: torch.zeros(len(targets), 1, dtype=torch.float64) for v in VARIANTS}
    density = torch.zeros(height * width, dtype=torch.float64)
    for start in range(0, settings.masks, settings.batch_size):
        masks = masks_from_draws(cells[start:start + settings.batch_size], shifts[start:start + settings.batch_size],
                                 height, width)
        found = detect_in_batches(detector, masked_images(image, masks), batch_size=settings.batch_size,
                                  conf=settings.conf, iou=settings.iou, max_det=settings.max_det)
        weights = [[drise_weights(t, d, settings.match_iou) for d in found] for t in targets]
        flat = masks.reshape(len(masks), -1).double()
        density += flat.sum(dim=0)
        for variant in VARIANTS:
            w = torch.tensor([[row[variant] for row in per_target] for per_target in weights], dtype=torch.float64)
            sums[variant] += w @ flat
            weight_sums[variant] += w.sum(dim=1, keepdim=True)
    scale = settings.masks * settings.p
    if settings.baseline == "mean":
        sums = {v: s - weight_sums[v] / settings.masks * density[None] for v, s in sums.items()}
    return {v: (s / scale).reshape(len(targets), height, width) for v, s in sums.items()}
