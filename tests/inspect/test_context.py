"""InspectContext: built the way `unirep eval` sees a backbone (packaged MobileNetV2 at 64 px, the feature cache,
unirep's linear probe with C chosen on val), its differentiable classifier is the probe; layers are the stages, ViT
tokens come back as maps equal to timm's own; a bad layer name is one line naming the valid ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unirep.backbones import create_backbone
from unirep.config import EvalConfig, backbone_specs, load_config
from unirep.errors import ConfigError
from unirep.inspect.context import InspectContext, build_context

MOBILENET = "mobilenetv2_100.packaged_in1k"
# Two Cs, 0.01 and 0.1, for the probe (the default 45-point sweep costs a minute on 2 busy cores).
FAST_PROBE = ["linear.n_c=2", "linear.c_min_exp=-2", "linear.c_max_exp=-1"]


@pytest.fixture(scope="module")
def mobilenet_digits(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "inspect-feature-cache"  # shared with the CLI tests of this session
    cfg = load_config(EvalConfig, dotlist=[*FAST_PROBE, f"cache_dir={cache}"], backbones=[MOBILENET],
                      tasks=["sklearn-digits"])
    out = tmp_path_factory.mktemp("inspect-context")
    return build_context(backbone_specs(cfg)[0], "sklearn-digits", cfg, n_images=32, out_dir=out)


def test_the_classifier_is_the_probe_on_test_images(mobilenet_digits):
    ctx = mobilenet_digits
    assert ctx.input_size == 64 and ctx.task_name == "sklearn-digits" and len(ctx.class_names) == 10
    assert list(ctx.layers) == [f"stage{i}" for i in range(5)] and ctx.spatial
    test_X, test_y = ctx.features("test")
    probe_predictions = ctx.probe.predict(test_X)
    pixels, labels, ids = ctx.pixels("test")  # every test image, in manifest order
    assert len(ids) == len(test_X) == 600 and np.array_equal(labels.numpy(), test_y)
    with torch.no_grad():
        logits = torch.cat([ctx.classifier(pixels[i:i + 200]) for i in range(0, len(pixels), 200)])
    assert logits.shape == (600, 10)
    agreement = float(np.mean(logits.argmax(1).numpy() == probe_predictions))
    assert agreement >= 0.99
    assert ctx.provenance["classifier_agreement"]["share"] >= 0.99
    # The probe chose its C on val among the configured grid and was scored on test once.
    probe = ctx.provenance["probe"]
    assert any(probe["C"] == pytest.approx(c) for c in (0.01, 0.1))
    assert probe["test_score"] == pytest.approx(100 * np.mean(probe_predictions == test_y))
    # The classifier is differentiable w.r.t. its input (captum, FGSM and PGD need it).
    x = pixels[:2].clone().requires_grad_(True)
    ctx.classifier(x)[:, 0].sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_pixels_are_a_fixed_seeded_draw_and_references_exist(mobilenet_digits):
    ctx = mobilenet_digits
    first, labels, ids = ctx.pixels("train", 16)
    again, _, ids_again = ctx.pixels("train", 16)
    assert ids == ids_again and torch.equal(first, again)
    assert first.shape == (16, 3, 64, 64) and 0.0 <= float(first.min()) and float(first.max()) <= 1.0
    assert ids != ctx.pixels("train", 32)[2][:16] or len(set(ids)) == 16
    references = ctx.reference_backbones()
    assert set(references) == {"random-init", "trained"}
    trained = references["trained"]
    assert torch.equal(trained.model.conv_stem.weight, ctx.backbone.model.conv_stem.weight)
    assert not torch.equal(references["random-init"].model.conv_stem.weight, ctx.backbone.model.conv_stem.weight)
    assert ctx.object_masks(ids) is None  # no offline task knows object boxes


def test_vit_tokens_come_back_as_the_maps_timm_gives():
    vit = create_backbone("random:vit_tiny_patch16_224", input_size=64)
    images = torch.rand(4, 3, 64, 64)
    ctx = InspectContext.for_testing(vit, images, torch.arange(4) % 2, classifier=torch.nn.Identity())
    assert list(ctx.layers) == [f"stage{i}" for i in range(12)]
    maps = ctx.layer_maps(images, ["stage3", "stage11"])
    with torch.no_grad():
        expected = vit.model.forward_intermediates(ctx.normalize(images), indices=[3, 11], intermediates_only=True)
    assert maps["stage3"].shape == (4, 192, 4, 4)
    torch.testing.assert_close(maps["stage3"], expected[0])
    torch.testing.assert_close(maps["stage11"], expected[1])


def test_unknown_layer_is_one_line_naming_the_valid_ones():
    backbone = create_backbone("random:resnet18", input_size=32)
    with pytest.raises(ConfigError) as info:
        InspectContext.for_testing(backbone, torch.rand(4, 3, 32, 32), torch.arange(4) % 2, layers=["stage9"],
                                   classifier=torch.nn.Identity())
    message = str(info.value)
    assert "\n" not in message and "no layer 'stage9'" in message
    assert "stage0 (= model.act1)" in message and "stage4 (= model.layer4)" in message
    ctx = InspectContext.for_testing(backbone, torch.rand(4, 3, 32, 32), torch.arange(4) % 2,
                                     layers=["layer3", "model.layer2.1.conv1"], classifier=torch.nn.Identity())
    assert list(ctx.layers) == ["stage3", "model.layer2.1.conv1"]
    assert ctx.layer_maps(torch.rand(2, 3, 32, 32))["model.layer2.1.conv1"].shape == (2, 128, 4, 4)
