"""Occlusion section: captum Occlusion against a direct loop over windows, a model that only looks at one patch,
region shares, the centred prior, deletion/insertion curves against direct forwards, and the section on a context.
No training; whole file ~10 s on 2 shared cores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from unirep.backbones.base import Backbone, DataConfig
from unirep.explanation_metrics import deletion_insertion, insertion_start
from unirep.inspect.context import InspectContext
from unirep.inspect.occlusion import (
    ClassProbabilities,
    OcclusionSection,
    centred_prior,
    occlusion_maps,
    region_shares,
)

SIZE, PATCH = 32, (slice(8, 16), slice(16, 24))  # the only informative region: rows 8-15, columns 16-23


class PatchBackbone(Backbone):
    """Features: the mean brightness of one 8 x 8 patch (every other pixel is ignored)."""

    def __init__(self):
        super().__init__("test-patch", DataConfig(input_size=SIZE, mean=(0.0,) * 3, std=(1.0,) * 3), "test")
        self.num_features = 1

    def forward(self, x):
        return x[:, :, PATCH[0], PATCH[1]].mean(dim=(1, 2, 3))[:, None]


class PatchClassifier(nn.Module):
    """Class 0 when the patch is bright (mean > 0.3), class 1 otherwise: logits (10 (m - 0.3), 0)."""

    def __init__(self):
        super().__init__()
        self.backbone = PatchBackbone()

    def forward(self, x):
        brightness = self.backbone(x)
        return torch.cat([10 * (brightness - 0.3), torch.zeros_like(brightness)], dim=1)


def bright_images(n: int = 4, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.5 + 0.5 * torch.rand(n, 3, SIZE, SIZE, generator=generator)


def patch_mask() -> torch.Tensor:
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[PATCH] = True
    return mask


def test_occlusion_equals_a_direct_loop_over_windows():
    torch.manual_seed(1)
    model = ClassProbabilities(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3)))
    images, window, stride = torch.rand(2, 3, 7, 7), 3, 2
    targets = torch.tensor([0, 2])
    got = occlusion_maps(model, images, targets, window=window, stride=stride, perturbations_per_eval=5)
    total, count = torch.zeros(2, 7, 7, dtype=torch.float64), torch.zeros(7, 7)
    with torch.no_grad():
        clean = model(images)[torch.arange(2), targets].double()
        for top in range(0, 7 - window + 1, stride):
            for left in range(0, 7 - window + 1, stride):
                occluded = images.clone()
                occluded[:, :, top:top + window, left:left + window] = 0.0
                drop = clean - model(occluded)[torch.arange(2), targets].double()
                total[:, top:top + window, left:left + window] += drop[:, None, None]
                count[top:top + window, left:left + window] += 1
    assert count.min() >= 1  # (7 - 3) / 2 + 1 = 3 windows a side cover the image
    torch.testing.assert_close(got.double(), total / count, atol=1e-6, rtol=0)
    one_at_a_time = occlusion_maps(model, images, targets, window=window, stride=stride, perturbations_per_eval=1)
    torch.testing.assert_close(got, one_at_a_time, atol=1e-6, rtol=0)


def test_occluding_the_only_informative_patch_drops_the_decision_and_the_attribution_lies_inside_it():
    classifier, images = PatchClassifier(), bright_images()
    model = ClassProbabilities(classifier)
    with torch.no_grad():
        assert torch.all(classifier(images).argmax(1) == 0)
        occluded = images.clone()
        occluded[:, :, PATCH[0], PATCH[1]] = 0.0
        assert torch.all(classifier(occluded).argmax(1) == 1)  # the decision flips
    targets = torch.zeros(4, dtype=torch.long)
    aligned = occlusion_maps(model, images, targets, window=8, stride=8, perturbations_per_eval=16)
    shares = region_shares(aligned, patch_mask())
    assert shares["inside_share"] == pytest.approx([1.0] * 4, abs=1e-6)
    assert shares["region_area_share"] == pytest.approx([64 / 1024] * 4)
    with torch.no_grad():
        p_clean, p_occluded = model(images)[:, 0], model(occluded)[:, 0]
    torch.testing.assert_close(aligned[:, 8, 16], p_clean - p_occluded, atol=1e-6, rtol=0)
    assert torch.all(aligned[:, ~patch_mask()] == 0)
    # Overlapping windows smear the drop over their neighbours: still most of it inside, none far away.
    overlapping = occlusion_maps(model, images, targets, window=8, stride=4, perturbations_per_eval=32)
    assert min(region_shares(overlapping, patch_mask())["inside_share"]) > 0.5
    near = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    near[1:23, 9:31] = True
    assert torch.all(overlapping[:, ~near] == 0)


def test_region_shares_and_the_centred_prior():
    maps = torch.zeros(2, 4, 4)
    maps[0, 1, 1], maps[0, 0, 0], maps[0, 3, 3] = 3.0, 1.0, -5.0  # negative attribution does not count
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1:3, 1:3] = True
    shares = region_shares(maps, mask)
    assert shares["inside_share"] == [pytest.approx(0.75), None]  # image 2 has no positive attribution
    assert shares["outside_share"][0] == pytest.approx(0.25)
    for size, area in ((64, 0.5), (32, 0.25)):
        prior = centred_prior(size, area)
        assert abs(float(prior.float().mean()) - area) < 0.02
        assert torch.equal(prior, prior.flip(0)) and torch.equal(prior, prior.T)
        assert prior[size // 2, size // 2] and not prior[0, 0]


def test_deletion_and_insertion_curves_equal_direct_forwards():
    classifier, images = PatchClassifier(), bright_images(2, seed=5)
    model = ClassProbabilities(classifier)
    targets = torch.zeros(2, dtype=torch.long)
    oracle = patch_mask().float().expand(2, -1, -1) + 1e-3 * torch.rand(2, SIZE, SIZE)
    curves = deletion_insertion(model, images, targets, oracle, steps=16)
    fractions = np.asarray(curves["fractions"])
    assert fractions[0] == 0 and fractions[-1] == 1 and len(fractions) == 17
    with torch.no_grad():
        deletion, insertion = np.asarray(curves["deletion"]["probability"]), np.asarray(
            curves["insertion"]["probability"])
        np.testing.assert_allclose(deletion[:, 0], model(images)[:, 0].numpy(), atol=1e-6)
        np.testing.assert_allclose(deletion[:, -1], model(torch.zeros_like(images))[:, 0].numpy(), atol=1e-6)
        np.testing.assert_allclose(insertion[:, 0], model(insertion_start(images))[:, 0].numpy(), atol=1e-6)
        np.testing.assert_allclose(insertion[:, -1], model(images)[:, 0].numpy(), atol=1e-6)
        # step 1: the 64 top-ranked pixels (1/16 of 1024) = the patch, deleted
        top = torch.argsort(oracle[1].flatten(), descending=True)[:64]
        deleted = images[1].clone().reshape(3, -1)
        deleted[:, top] = 0.0
        assert deletion[1, 1] == pytest.approx(float(model(deleted.reshape(1, 3, SIZE, SIZE))[0, 0]), abs=1e-6)
    assert curves["deletion"]["auc"][0] == pytest.approx(float(np.trapezoid(deletion[0], fractions)))
    at_random = deletion_insertion(model, images, targets, oracle, steps=16, order="random", seed=0)
    assert max(curves["deletion"]["auc"]) < min(at_random["deletion"]["auc"])  # the oracle deletes faster


def test_section_runs_on_a_context_with_object_masks(tmp_path):
    images = bright_images(6, seed=2)
    labels = torch.zeros(6, dtype=torch.long)
    classifier = PatchClassifier()
    ctx = InspectContext.for_testing(classifier.backbone, images, labels, classifier=classifier, out_dir=tmp_path,
                                     class_names=["bright", "dark"],
                                     settings={"occlusion": {"window": 8, "stride": 8, "curve_steps": 8}})
    result = OcclusionSection().run(ctx)
    json.dumps(result.numbers)
    assert result.numbers["region"].startswith("centred-disc prior covering 50%") and result.notes
    assert result.numbers["settings"]["windows_per_image"] == 16
    assert len(result.numbers["per_image"]) == 6 and '<img class="figure"' in result.html
    ctx.data.object_masks = lambda ids: patch_mask().expand(len(ids), -1, -1)
    ctx.settings["occlusion"]["n_images"] = 3  # another setting: computed afresh, not the cached maps
    with_masks = OcclusionSection().run(ctx)
    assert with_masks.numbers["region"] == "task object masks" and not with_masks.notes
    assert with_masks.numbers["mean_inside_share"] == pytest.approx(1.0, abs=1e-6)
    assert len(with_masks.numbers["per_image"]) == 3
    delta = OcclusionSection().differences(result, with_masks).numbers["b_minus_a"]
    assert delta["deletion_auc"] == pytest.approx(with_masks.numbers["deletion_auc"] - result.numbers["deletion_auc"])


def test_a_window_larger_than_the_image_or_an_unknown_setting_is_refused(tmp_path):
    from unirep.errors import ConfigError

    classifier = PatchClassifier()
    for settings, message in (({"window": 64}, r"occlusion.window=64.*1 <= window <= 32"),
                              ({"windw": 4}, r"no setting\(s\) \['windw'\]")):
        ctx = InspectContext.for_testing(classifier.backbone, bright_images(2), torch.zeros(2, dtype=torch.long),
                                         classifier=classifier, out_dir=tmp_path, settings={"occlusion": settings})
        with pytest.raises(ConfigError, match=message):
            OcclusionSection().run(ctx)
