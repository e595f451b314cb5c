"""WiSE-FT's weight-space interpolation (unirep.finetune.wise) on timm's tiny `test_resnet` (BatchNorm included): the
endpoints are returned exactly, α = 0.5 is the plain average, and the interpolated backbone computes what a timm model
loaded with hand-interpolated weights computes. The fine-tuned endpoint is the pretrained one after real SGD steps in
train mode on digit images, so its weights, head and BatchNorm running statistics all differ from the start."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from unirep.backbones import create_backbone
from unirep.errors import ConfigError, WeightsError
from unirep.features import ExtractionSettings, extract_features
from unirep.finetune.module import Classifier
from unirep.finetune.wise import (
    checked_alphas,
    interpolate_states,
    recompute_batchnorm,
    state_digest,
    wise_classifier,
    wise_label,
)

INPUT_SIZE = 32


@pytest.fixture(scope="module")
def endpoints(digits):
    backbone = create_backbone("random:test_resnet", input_size=INPUT_SIZE, seed=3)
    pretrained = Classifier(copy.deepcopy(backbone), 10, seed=0)
    with torch.no_grad():  # a probe-like head: any fixed weights, distinct from the fine-tuned head below
        pretrained.head.weight.copy_(torch.linspace(-1, 1, pretrained.head.weight.numel()).view_as(
            pretrained.head.weight))
    finetuned = copy.deepcopy(pretrained).train()
    optimizer = torch.optim.SGD(finetuned.parameters(), lr=0.05, momentum=0.9)
    normalize = backbone.data_config.normalize_batch
    images = torch.stack([torch.from_numpy(np.array(digits.train[i][0].resize((INPUT_SIZE, INPUT_SIZE))))
                          .permute(2, 0, 1) for i in range(64)])
    labels = torch.as_tensor(digits.train.labels[:64])
    for step in range(3):
        batch = slice(step * 16, step * 16 + 32)
        loss = F.cross_entropy(finetuned(normalize(images[batch])), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return pretrained.eval(), finetuned.eval(), images


def _float_keys(state):
    return [k for k, v in state.items() if v.is_floating_point()]


def test_endpoints_are_exact_and_the_middle_is_the_average(endpoints):
    pretrained, finetuned, _ = endpoints
    theta_0, theta_1 = pretrained.state_dict(), finetuned.state_dict()
    running = [k for k in theta_0 if k.endswith("running_var")]
    assert running and not torch.equal(theta_0[running[0]], theta_1[running[0]])  # BN statistics did move
    assert not torch.equal(theta_0["head.weight"], theta_1["head.weight"])
    at_0, at_1, half = (interpolate_states(theta_0, theta_1, a) for a in (0.0, 1.0, 0.5))
    assert at_0.keys() == at_1.keys() == half.keys() == theta_0.keys()
    for key in theta_0:
        assert torch.equal(at_0[key], theta_0[key]) and torch.equal(at_1[key], theta_1[key]), key
    for key in _float_keys(theta_0):
        torch.testing.assert_close(half[key], (theta_0[key] + theta_1[key]) / 2, rtol=1e-6, atol=1e-7)
    counters = [k for k in theta_0 if k.endswith("num_batches_tracked")]
    assert counters and all(torch.equal(half[k], theta_1[k]) for k in counters)  # integers: the nearer endpoint


def test_wise_classifier_equals_the_endpoint_networks_at_0_and_1(endpoints):
    pretrained, finetuned, _ = endpoints
    for alpha, expected in ((0.0, pretrained), (1.0, finetuned)):
        net = wise_classifier(pretrained, finetuned, alpha, label=wise_label("tiny@full-seed0", alpha))
        got, want = net.state_dict(), expected.state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
        assert net.backbone.name == f"tiny@full-seed0@wise{alpha:g}"
        assert net.backbone.weights_id == f"wise:alpha={alpha:g}:{state_digest(want)}"
    assert finetuned.backbone.name == "random:test_resnet"  # the endpoints are left as they were


def test_interpolated_features_equal_a_hand_interpolated_timm_model(endpoints):
    pretrained, finetuned, images = endpoints
    alpha = 0.25
    net = wise_classifier(pretrained, finetuned, alpha, label="tiny@wise0.25")
    # Independently: timm's own model, weights mixed here in float64 from the two backbones' timm state dicts.
    a, b = pretrained.backbone.model.state_dict(), finetuned.backbone.model.state_dict()
    mixed = {k: ((1 - alpha) * a[k].double() + alpha * b[k].double()).to(a[k].dtype) if a[k].is_floating_point()
             else b[k] for k in a}
    reference = timm.create_model("test_resnet")
    reference.load_state_dict(mixed)
    reference.eval()
    config = net.backbone.data_config  # the extraction's geometry (resize + centre crop), then normalisation
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(
            config.normalize_batch(config.resize_crop()(images))), pre_logits=True)
    from unirep.tasks.base import ImageSet

    image_set = ImageSet.from_array(images.permute(0, 2, 3, 1).numpy().copy(), np.zeros(len(images), np.int64),
                                    [str(i) for i in range(len(images))], "digits")
    got = extract_features(net.backbone, image_set, ExtractionSettings(batch_size=32, device="cpu")).features
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(got, extract_features(pretrained.backbone, image_set,
                                                 ExtractionSettings(batch_size=32, device="cpu")).features, atol=1e-3)


def test_recomputed_batchnorm_statistics_are_the_interpolated_networks_own(endpoints):
    pretrained, finetuned, images = endpoints
    net = wise_classifier(pretrained, finetuned, 0.5, label="tiny@wise0.5-bn")
    layers = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    first = layers[0]
    interpolated = first.running_mean.clone()
    inputs = []  # what the first BatchNorm layer sees: the stem conv's output, which no BatchNorm precedes
    hook = first.register_forward_hook(lambda module, args, output: inputs.append(args[0].detach().double()))
    with torch.no_grad():
        net.eval()(net.backbone.data_config.normalize_batch(images))
    hook.remove()
    assert recompute_batchnorm(net, images, batch_size=len(images)) == len(layers)
    assert not net.training and not first.training and first.momentum == 0.1
    x = inputs[0]
    torch.testing.assert_close(first.running_mean.double(), x.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(first.running_var.double(), x.var(dim=(0, 2, 3)), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(interpolated, first.running_mean)


def test_digests_tell_states_apart(endpoints):
    pretrained, finetuned, _ = endpoints
    theta_0, theta_1 = pretrained.state_dict(), finetuned.state_dict()
    assert state_digest(theta_0) == state_digest({k: v.clone() for k, v in theta_0.items()})
    digests = {state_digest(interpolate_states(theta_0, theta_1, a)) for a in (0.0, 0.25, 0.5, 1.0)}
    assert len(digests) == 4


@pytest.mark.parametrize("alphas", [[1.5], [-0.1], []])
def test_alpha_outside_0_1_is_refused(alphas):
    with pytest.raises(ConfigError, match="wise_alphas"):
        checked_alphas(alphas)


def test_states_of_different_networks_are_refused(endpoints):
    pretrained, finetuned, _ = endpoints
    theta_1 = dict(finetuned.state_dict())
    theta_1.pop("head.bias")
    with pytest.raises(WeightsError, match="keys differ"):
        interpolate_states(pretrained.state_dict(), theta_1, 0.5)
    theta_1 = {**finetuned.state_dict(), "head.bias": torch.zeros(3)}
    with pytest.raises(WeightsError, match="head.bias"):
        interpolate_states(pretrained.state_dict(), theta_1, 0.5)
