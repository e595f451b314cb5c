"""Exemplars: a unit whose best input is planted among plain images finds it, the crop holds where the unit fires
and where the planted pattern is, and the gradient-measured receptive field equals the one known by construction."""

from __future__ import annotations

import pytest
import torch

from unirep.backbones import create_backbone
from unirep.errors import ConfigError
from unirep.inspect.context import InspectContext
from unirep.inspect.exemplars import Exemplars, choose_units, crop_box

LAYER = "stage2"
PATCH = (slice(3, 14), slice(19, 30))  # rows, columns of the planted pattern in a 32 x 32 image
CELL = (1, 3)  # the LAYER map cell (stride 8) whose receptive field the patch covers


@pytest.fixture(scope="module")
def planted():
    """30 noise images and, at index 17, one whose patch was optimised (gradient ascent) to drive a unit of LAYER
    (the unit with the largest activation on the noise images: it is live, and the planted image must beat the best
    of them), everything outside the patch left as it was."""
    torch.manual_seed(0)
    backbone = create_backbone("random:resnet18", input_size=32)
    images = (0.5 + 0.2 * torch.randn(30, 3, 32, 32)).clamp(0, 1)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., PATCH[0], PATCH[1]] = 1.0
    probe_ctx = InspectContext.for_testing(backbone, images, torch.arange(30) % 3, layers=[LAYER],
                                           classifier=torch.nn.Identity())
    unit = int(probe_ctx.layer_maps(images, [LAYER])[LAYER].amax(dim=(0, 2, 3)).argmax())
    ctx = InspectContext.for_testing(backbone, images, torch.arange(30) % 3, layers=[LAYER],
                                     classifier=torch.nn.Identity(), n_images=30,
                                     settings={"exemplars": {"units": [unit], "top_k": 3, "layers": [LAYER]}})
    pattern = images[17:18].clone().requires_grad_(True)
    optimiser = torch.optim.Adam([pattern], lr=0.05)
    for _ in range(30):
        optimiser.zero_grad()
        x = images[17:18] * (1 - mask) + pattern.clamp(0, 1) * mask
        (-ctx.layer_maps(x, [LAYER], grad=True)[LAYER][0, unit, CELL[0], CELL[1]]).backward()
        optimiser.step()
    with torch.no_grad():
        images[17:18] = images[17:18] * (1 - mask) + pattern.clamp(0, 1) * mask
    ctx._pixel_cache.clear()
    return ctx, images, unit


def test_the_planted_image_is_the_units_top_exemplar_and_its_crop_holds_the_argmax(planted):
    ctx, images, planted_unit = planted
    result = Exemplars().run(ctx)
    layer = result.numbers["layers"][LAYER]
    (unit,) = layer["units"]
    top = unit["top"][0]
    assert unit["unit"] == planted_unit and top["id"] == "train-17"
    # Independently: the unit's map on the planted image, from timm's own forward_intermediates.
    with torch.no_grad():
        (fmap,) = ctx.backbone.model.forward_intermediates(ctx.normalize(images[17:18]), indices=[2],
                                                           intermediates_only=True)
    unit_map = fmap[0, planted_unit]
    assert top["activation"] == pytest.approx(float(unit_map.max()), rel=1e-5)
    i, j = divmod(int(unit_map.flatten().argmax()), unit_map.shape[1])
    assert top["argmax"] == [i, j] == list(CELL)
    y0, x0, y1, x1 = top["crop"]
    stride = 32 // unit_map.shape[0]
    centre = ((i + 0.5) * stride, (j + 0.5) * stride)
    assert y0 <= centre[0] <= y1 and x0 <= centre[1] <= x1  # the crop holds the argmax cell
    patch_centre = ((PATCH[0].start + PATCH[0].stop) / 2, (PATCH[1].start + PATCH[1].stop) / 2)
    assert y0 <= patch_centre[0] <= y1 and x0 <= patch_centre[1] <= x1  # and the planted pattern
    assert 0 <= y0 < y1 <= 32 and 0 <= x0 < x1 <= 32
    assert result.html.count("<img") == 3 + 1  # three exemplars and one strip of crops
    assert top["activation"] > 2 * max(t["activation"] for t in unit["top"][1:])


def test_gradient_receptive_fields_equal_the_ones_known_by_construction(planted):
    ctx, _, _ = planted
    from unirep.inspect.exemplars import receptive_field

    pixels, _, _ = ctx.pixels("train", 8)
    resnet = InspectContext.for_testing(ctx.backbone, pixels, torch.arange(8) % 2, layers=["stage0"],
                                        classifier=torch.nn.Identity())
    # stage0 of a ResNet is the stem's 7x7 convolution (stride 2, padding 3) and its ReLU: a 7 x 7 field.
    rf = receptive_field(resnet, "stage0", pixels)
    assert rf["theoretical_size"] == [7, 7] and rf["stride"] == [2.0, 2.0]
    assert rf["effective_size"] <= 7
    # Any ViT block attends to every patch: the field is the whole image from the first block on.
    vit = create_backbone("random:vit_tiny_patch16_224", input_size=32)
    vit_ctx = InspectContext.for_testing(vit, pixels, torch.arange(8) % 2, layers=["stage0"],
                                         classifier=torch.nn.Identity())
    assert receptive_field(vit_ctx, "stage0", pixels)["theoretical_size"] == [32, 32]


def test_unit_choice_and_crop_geometry():
    maxima = torch.tensor([[0.0, 1.0, 5.0, 0.0], [0.0, 3.0, 5.1, -0.0], [0.0, 2.0, 4.9, 0.0]])
    assert choose_units(maxima, 3) == [1, 2]  # dead units (0 everywhere) are never chosen; most spread first
    with pytest.raises(ConfigError, match="out of range"):
        choose_units(maxima, [4])
    # A corner cell's crop is shifted inside the image and keeps its size.
    assert crop_box(0, (4, 4), (32, 32), 12) == [0, 0, 12, 12]
    assert crop_box(15, (4, 4), (32, 32), 12) == [20, 20, 32, 32]
    assert crop_box(5, (4, 4), (32, 32), 2) == [8, 8, 16, 16]  # never smaller than one stride
    assert crop_box(5, (4, 4), (32, 32), 8, offset=(-4.0, 0.0)) == [4, 8, 12, 16]  # centre moved up 4 px
