"""Attributions section: captum Integrated Gradients and LayerGradCam against their defining formulas, the cascade of
the model-randomisation check, the check itself on a trained model, and the section on a context.

The model: the small CNN of test_robustness.py trained for ~2 s on the real sklearn-digits task (16-px images).
Whole file ~15 s on 2 shared cores.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_robustness import train_digits_classifier
from torch import nn

from unirep.inspect.attributions import (
    AttributionsSection,
    attribution_notes,
    cascade_steps,
    grad_cam,
    integrated_gradients,
    parametrised_modules,
    randomisation_check,
    randomised_copy,
    rank_correlations,
    with_token_map,
)
from unirep.inspect.context import InspectContext
from unirep.inspect.occlusion import ClassProbabilities, predicted_classes

CAM_LAYER = "1.features.3"  # the ReLU after the second convolution: (16, 8, 8) maps


@pytest.fixture(scope="module")
def trained():
    backbone, classifier, x, y = train_digits_classifier()
    x = x[:8]
    return backbone, classifier, x, y[:8], predicted_classes(classifier, x)


def test_integrated_gradients_add_up_to_the_probability_gain_over_the_black_baseline(trained):
    _, classifier, x, _, targets = trained
    model = ClassProbabilities(classifier)
    maps, delta = integrated_gradients(model, x, targets, n_steps=32)
    assert maps.shape == (8, 16, 16)
    with torch.no_grad():
        gain = (model(x) - model(torch.zeros_like(x)))[torch.arange(8), targets]
    torch.testing.assert_close(maps.sum(dim=(1, 2)), gain, atol=0.02, rtol=0)  # completeness (Sundararajan 2017)
    assert delta.abs().max() < 0.02
    wrong = (targets + 1) % 10  # the maps are of the target asked for, not of any class
    assert not torch.allclose(integrated_gradients(model, x, wrong, n_steps=8)[0], maps, atol=1e-3)


def test_grad_cam_equals_relu_of_gradient_weighted_activations(trained):
    _, classifier, x, _, targets = trained
    layer = classifier.get_submodule(CAM_LAYER)
    maps, size = grad_cam(classifier, layer, x, targets)
    assert size == (8, 8) and maps.shape == (8, 16, 16)
    found = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: found.setdefault("a", out))
    logits = classifier(x.clone().requires_grad_(True))
    handle.remove()
    activations = found["a"]
    gradient, = torch.autograd.grad(logits[torch.arange(8), targets].sum(), activations)
    cam = torch.relu((gradient.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1, keepdim=True))
    expected = nn.functional.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(maps, expected.detach(), atol=1e-5, rtol=1e-4)


def test_cascade_randomises_from_the_top_and_copies_leave_the_model_alone(trained):
    _, classifier, _, _, _ = trained
    assert parametrised_modules(classifier) == ["1.features.0", "1.features.2", "2"]
    steps = cascade_steps(classifier, {"conv1": "1.features.0", "conv2": "1.features.2"})
    assert steps == [("above conv2", ["2"]), ("conv2 and above", ["1.features.2", "2"]),
                     ("all layers", ["1.features.0", "1.features.2", "2"])]
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    copy_a, counts = randomised_copy(classifier, ["1.features.2", "2"], seed=4)
    copy_b, _ = randomised_copy(classifier, ["1.features.2", "2"], seed=4)
    assert counts == {"reset_parameters": 2, "redrawn": 0}
    for key, value in classifier.state_dict().items():
        assert torch.equal(value, before[key])  # the original is untouched
        assert torch.equal(copy_a.state_dict()[key], copy_b.state_dict()[key])  # seeded
    assert torch.equal(copy_a.state_dict()["1.features.0.weight"], before["1.features.0.weight"])
    assert not torch.equal(copy_a.state_dict()["1.features.2.weight"], before["1.features.2.weight"])


def test_randomisation_check_is_one_for_an_unchanged_copy_and_low_for_a_randomised_model(trained):
    _, classifier, x, _, targets = trained
    methods = {"integrated-gradients": lambda m: integrated_gradients(ClassProbabilities(m), x, targets,
                                                                      n_steps=16)[0],
               "grad-cam": lambda m: grad_cam(m, m.get_submodule(CAM_LAYER), x, targets)[0]}
    check = randomisation_check(classifier, methods, [("nothing", []), ("all layers",
                                                                       parametrised_modules(classifier))])
    unchanged, randomised = (step["methods"] for step in check["steps"])
    for name in methods:
        assert unchanged[name]["mean_spearman_abs"] == pytest.approx(1.0, abs=1e-9)
        assert unchanged[name]["mean_ssim"] == pytest.approx(1.0, abs=1e-9)
    assert randomised["grad-cam"]["mean_spearman_abs"] < 0.5
    assert randomised["grad-cam"]["mean_ssim"] < 0.5
    # IG's signs follow the weights; |IG| keeps the digit's strokes through the x-times-gradient factor (Adebayo
    # et al. 2018 saw the same): it stays correlated, the signed map does not.
    assert randomised["integrated-gradients"]["mean_spearman"] < 0.5
    assert randomised["integrated-gradients"]["mean_spearman_abs"] > randomised["integrated-gradients"][
        "mean_spearman"]


def test_rank_correlations_of_known_maps():
    a = torch.arange(64.0).reshape(1, 8, 8)
    values = rank_correlations(torch.cat([a, a]), torch.cat([2 * a + 1, -a]))
    assert values["spearman"] == [pytest.approx(1.0), pytest.approx(-1.0)]
    assert values["spearman_abs"] == [pytest.approx(1.0), pytest.approx(1.0)]
    assert rank_correlations(torch.zeros(1, 8, 8), a)["spearman"] == [None]  # a constant map has no ranking


def test_section_runs_on_a_context(trained, tmp_path):
    backbone, classifier, x, y, _ = trained
    ctx = InspectContext.for_testing(backbone, x, y, classifier=classifier, out_dir=tmp_path,
                                     layers=["features.1", "features.3"],
                                     settings={"occlusion": {"n_images": 4, "curve_steps": 8},
                                               "attributions": {"ig_steps": 32, "randomisation_images": 4}})
    result = AttributionsSection().run(ctx)
    json.dumps(result.numbers)
    assert list(result.numbers["methods"]) == ["occlusion", "integrated-gradients", "grad-cam"]
    assert result.numbers["settings"]["grad_cam"]["layer"] == "features.3"
    assert result.numbers["settings"]["integrated_gradients"]["completeness_gap_max"] < 0.03  # 0.011 measured
    steps = [s["randomised"] for s in result.numbers["randomisation"]["steps"]]
    assert steps == ["above features.3", "features.1 and above", "all layers"]
    verdict = result.numbers["randomisation_verdict"]
    assert verdict["grad-cam"]["changed_abs"] and verdict["grad-cam"]["result"].endswith("(passes)")
    assert "Adebayo" in result.html and '<img class="figure"' in result.html and not result.notes
    shifted = json.loads(json.dumps(result.numbers))
    shifted["methods"]["grad-cam"]["deletion_auc"] += 0.125
    delta = AttributionsSection().differences(result, type(result)(result.name, result.title, shifted, ""))
    assert delta.numbers["methods"]["grad-cam"]["deletion_auc"] == pytest.approx(0.125)
    assert delta.numbers["methods"]["occlusion"]["insertion_auc"] == 0.0


def test_notes_say_when_grad_cam_is_coarse_or_missing_and_when_ig_does_not_add_up():
    coarse, missing = attribution_notes(("stage4", "p", (2, 2)), torch.tensor([0.2, 0.6]))
    assert "stage4 is 2 x 2" in coarse and "0.40 on average (max 0.60)" in missing
    assert "Grad-CAM is not computed" in attribution_notes(None, torch.tensor([0.01]))[0]
    assert attribution_notes(("stage3", "p", (8, 8)), torch.tensor([0.01])) == []


def test_grad_cam_on_vit_tokens_goes_through_the_patch_grid():
    from unirep.backbones import create_backbone

    backbone = create_backbone("random:test_vit", input_size=32, seed=0)
    x, y = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 0, 1])
    ctx = InspectContext.for_testing(backbone, x, y, classifier=nn.Sequential(backbone, nn.Linear(
        backbone.num_features, 2)).eval(), layers=["stage3"])
    info = ctx.layer_info["stage3"]
    path = next(p for p, m in ctx.classifier.named_modules() if m is info.module)
    tapped, layer = with_token_map(ctx.classifier, path, info)
    with torch.no_grad():
        torch.testing.assert_close(tapped(x), ctx.classifier(x))  # the tap changes nothing
    targets = torch.tensor([1, 0, 1, 1])
    maps, size = grad_cam(tapped, layer, x, targets)
    assert size == tuple(info.grid) and maps.shape == (4, 32, 32)
    found = {}
    handle = info.module.register_forward_hook(lambda _m, _i, out: found.setdefault("tokens", out))
    logits = ctx.classifier(x.clone().requires_grad_(True))
    handle.remove()
    token_gradient, = torch.autograd.grad(logits[torch.arange(4), targets].sum(), found["tokens"])
    grid, gradient = info.as_map(found["tokens"]), info.as_map(token_gradient)  # patch tokens on the grid
    cam = torch.relu((gradient.mean(dim=(2, 3), keepdim=True) * grid).sum(dim=1, keepdim=True))
    expected = nn.functional.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(maps, expected.detach(), atol=1e-5, rtol=1e-4)
