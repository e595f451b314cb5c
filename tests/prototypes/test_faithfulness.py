"""The masking check's parts, against independent computations: the high-similarity box sits on the map's peak, the
evidence drop is the predicted logit minus the logit of the image with exactly that box set to the mean colour, the
summary's numbers are the per-image values' own, and the Wilson interval is the textbook one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unirep.backbones import create_backbone
from unirep.prototypes.faithfulness import (
    PrototypeClassifier,
    high_similarity_box,
    masking_check,
    summarise,
    wilson_interval,
)
from unirep.prototypes.maps import SpatialMaps
from unirep.prototypes.model import PrototypeHead


def test_box_surrounds_the_peak_of_the_upsampled_map():
    similarity = torch.zeros(4, 4)
    similarity[1, 2] = 5.0
    x1, y1, x2, y2 = high_similarity_box(similarity, 32)
    assert x1 <= 20 < x2 and y1 <= 12 < y2  # the centre of cell (row 1, col 2) at 8 px per cell
    assert (x2 - x1) * (y2 - y1) <= 0.25 * 32 * 32


def test_wilson_interval_is_the_textbook_one():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)


def test_evidence_drop_is_the_logit_change_under_exactly_that_mask():
    backbone = create_backbone("random:mobilenetv2_035", input_size=32)
    source = SpatialMaps(backbone, 2, "stage2")
    head = PrototypeHead(source.map_shape[0], 3, 2, 8, source.map_shape[1:], seed=0)
    classifier = PrototypeClassifier(source, head)
    pixels = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    check = masking_check(classifier, pixels, random_draws=2, seed=1)
    assert check["summary"]["n"] == 3
    for i, row in enumerate(check["images"]):
        x = backbone.data_config.normalize_batch(pixels[i:i + 1])
        with torch.no_grad():
            logits = head(source.maps(x))[0][0]
            x1, y1, x2, y2 = row["box"]
            masked = x.clone()
            masked[:, :, y1:y2, x1:x2] = 0.0
            after = head(source.maps(masked))[0][0]
        c = int(logits.argmax())
        assert row["predicted"] == c
        assert row["evidence_drop"] == pytest.approx(float(logits[c] - after[c]), rel=1e-4, abs=1e-5)
    summary = summarise(check["images"])
    differences = np.array([r["evidence_drop"] - r["random_drop"] for r in check["images"]])
    assert summary["logit"]["mean_difference"] == pytest.approx(differences.mean())
    assert summary["logit"]["share_evidence_larger"] == pytest.approx((differences > 0).mean())


def test_input_pixels_keep_a_whole_image_set_uncropped():
    # spectrogram sets are resized whole (their edge rows are frequency bands); other sets get the centre crop
    from torchvision.transforms import v2 as T

    from unirep.prototypes.maps import input_pixels
    from unirep.tasks.base import ImageSet

    backbone = create_backbone("random:mobilenetv2_035", input_size=32)
    assert backbone.data_config.crop_pct < 1
    rng = np.random.default_rng(0)
    images = ImageSet.from_array(rng.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8), np.array([0, 1]), ["a", "b"],
                                 "test")
    chosen = torch.from_numpy(images._pixels).permute(0, 3, 1, 2)
    cropped = input_pixels(images, backbone)
    assert torch.equal(cropped, backbone.data_config.resize_crop()(chosen))
    images.whole_image = True
    whole = input_pixels(images, backbone)
    resize = T.Resize(32, interpolation=T.InterpolationMode.BICUBIC if backbone.data_config.interpolation == "bicubic"
                      else T.InterpolationMode.BILINEAR, antialias=True)
    assert torch.equal(whole, resize(chosen)) and not torch.equal(whole, cropped)
