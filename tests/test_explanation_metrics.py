"""Explanation metrics: box masks, the pointing game and energy in a box against direct formulas written out
pixel by pixel, and the generic deletion/insertion curves against direct score evaluations. Runs in ~2 s.
The classifier form (`deletion_insertion`) is tested with the inspect report in tests/inspect/test_occlusion.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unirep.explanation_metrics import (
    box_mask,
    deletion_insertion_curves,
    energy_in_box,
    insertion_start,
    pointing_game,
)


def centre_inside(box, row, col) -> bool:
    x1, y1, x2, y2 = box
    return x1 <= col + 0.5 <= x2 and y1 <= row + 0.5 <= y2


BOXES = [(2.0, 1.0, 5.0, 4.0), (0.0, 0.0, 8.0, 6.0), (3.4, 2.6, 3.6, 5.9), (7.6, 5.6, 9.0, 9.0)]


@pytest.mark.parametrize("box", BOXES)
def test_box_mask_is_the_pixels_whose_centre_is_inside(box):
    mask = box_mask(torch.tensor(box), 6, 8)
    expected = torch.tensor([[centre_inside(box, r, c) for c in range(8)] for r in range(6)])
    assert torch.equal(mask, expected)


def test_pointing_game_and_energy_against_direct_formulas():
    generator = torch.Generator().manual_seed(0)
    box = (2.0, 1.0, 6.0, 4.0)  # columns 2..5, rows 1..3
    for _ in range(20):
        saliency = torch.randn(7, 9, generator=generator)
        flat = int(saliency.argmax())
        row, col = divmod(flat, 9)
        assert pointing_game(saliency, box) is centre_inside(box, row, col)
        positive = saliency.clamp(min=0).numpy().astype(np.float64)
        inside = sum(positive[r, c] for r in range(7) for c in range(9) if centre_inside(box, r, c))
        assert energy_in_box(saliency, box) == pytest.approx(inside / positive.sum(), rel=1e-12)


def test_pointing_game_edge_cases():
    saliency = torch.zeros(5, 5)
    assert pointing_game(saliency, (0, 0, 5, 5)) is None  # constant: nothing to point with
    assert energy_in_box(-torch.ones(5, 5), (0, 0, 5, 5)) is None  # no positive energy
    saliency[4, 4] = 1.0
    assert pointing_game(saliency, (0, 0, 3, 3)) is False
    assert pointing_game(saliency, (0, 0, 3, 3), tolerance=1.6) is True  # the box grown to (.., 4.6, 4.6)
    saliency[0, 0] = 1.0  # a tie: one of the maxima inside is a hit
    assert pointing_game(saliency, (0, 0, 3, 3)) is True
    assert energy_in_box(saliency, (0, 0, 3, 3)) == pytest.approx(0.5)


def test_generic_curves_equal_direct_scores():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 12, 12, generator=generator)
    weights = torch.rand(3, 12, 12, generator=generator)

    def score(i, batch):  # a different linear score per image, so the image index must reach the function
        return (batch * weights).sum(dim=(1, 2, 3)) * (i + 1)

    maps = torch.rand(2, 12, 12, generator=generator)
    curves = deletion_insertion_curves(score, images, maps, steps=4, baseline=0.25, batch_size=2)
    assert curves["fractions"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    order = torch.argsort(maps[1].flatten(), descending=True)
    for k in range(5):
        changed = torch.zeros(144, dtype=torch.bool)
        changed[order[:36 * k]] = True
        changed = changed.reshape(1, 12, 12)
        deleted = torch.where(changed, torch.tensor(0.25), images[1])
        inserted = torch.where(changed, images[1], insertion_start(images)[1])
        assert curves["deletion"]["probability"][1][k] == pytest.approx(float(score(1, deleted[None])), rel=1e-5)
        assert curves["insertion"]["probability"][1][k] == pytest.approx(float(score(1, inserted[None])), rel=1e-5)
    values = np.asarray(curves["deletion"]["probability"][0])
    assert curves["deletion"]["auc"][0] == pytest.approx(float(((values[1:] + values[:-1]) / 2).sum() / 4))
