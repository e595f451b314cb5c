"""Networks: small-input stems, L-inf-normalised concatenation, FSFT's parameter groups, schemes, bad input."""

from __future__ import annotations

import pytest
import torch

from unirep.backbones.base import DataConfig
from unirep.errors import ConfigError, UnknownNameError
from unirep.sources.label_sets import LabelSet
from unirep.sources.module import AugmentSettings, OptimSettings, SourceModule, augment, augmentation_params
from unirep.sources.networks import (
    NetworkSpec,
    SourceNetwork,
    compose_features,
    linf_normalise,
    resolve_feature_norm,
)
from unirep.sources.schemes import SCHEMES, create_scheme


def net(arch: str = "test_resnet", heads=None, feature_dim=None, stem=True, seed=0) -> SourceNetwork:
    torch.manual_seed(seed)
    return SourceNetwork(NetworkSpec(arch, heads or {"original": 10}, {}, stem, feature_dim))


def test_linf_concatenation_shapes_and_values():
    a, b = net(feature_dim=24, seed=0).eval(), net(feature_dim=40, heads={"coarse": 3}, seed=1).eval()
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        composed = compose_features([a, b], x, "linf")
        fa, fb = a.features(x), b.features(x)
    assert composed.shape == (5, 64) and fa.shape == (5, 24) and fb.shape == (5, 40)
    # Independent: each block divided by its own per-example max |value|, so every block peaks at exactly 1.
    torch.testing.assert_close(composed[:, :24], fa / fa.abs().max(dim=1, keepdim=True).values)
    torch.testing.assert_close(composed[:, 24:], fb / fb.abs().max(dim=1, keepdim=True).values)
    assert torch.allclose(composed[:, :24].abs().amax(1), torch.ones(5))
    assert torch.allclose(composed[:, 24:].abs().amax(1), torch.ones(5))
    assert torch.equal(compose_features([a], x, "none"), a.features(x))
    assert torch.equal(linf_normalise(torch.zeros(2, 3)), torch.zeros(2, 3))  # no division by zero
    assert resolve_feature_norm("auto", 1) == "none" and resolve_feature_norm("auto", 3) == "linf"
    with pytest.raises(ConfigError, match="feature_norm must be one of"):
        resolve_feature_norm("l2", 2)


@pytest.mark.parametrize("arch", ["test_resnet", "test_efficientnet", "test_convnext"])
def test_small_input_stem_doubles_the_resolution(arch):
    x = torch.randn(2, 3, 32, 32)
    plain, small = net(arch, stem=False).eval(), net(arch, stem=True).eval()
    with torch.no_grad():
        h_plain = plain.trunk.forward_features(x).shape[-1]
        h_small = small.trunk.forward_features(x).shape[-1]
    assert h_small == 2 * h_plain
    # Only strides/pooling change: the same weights fit both.
    small.load_state_dict(plain.state_dict())


def test_unknown_architecture_kwargs_and_stems_fail_in_one_line():
    with pytest.raises(UnknownNameError, match="'resnet181' is not a timm model: did you mean resnet18") as exc:
        net("resnet181")
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="rejected by timm model 'test_vit'.*model_kwargs=") as exc:
        SourceNetwork(NetworkSpec("test_vit", {"a": 2}, {"channels": [1]}, False))
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="no small-input stem adapter for 'test_vit'.*small_input_stem=false"):
        SourceNetwork(NetworkSpec("test_vit", {"a": 2}, {}, True))


def test_fsft_parameter_groups_and_learning_rates():
    network = net(heads={"original": 10, "coarse": 4}, feature_dim=32)
    module = SourceModule(network, DataConfig(input_size=16), OptimSettings(0.2, 0.9, 0.0, 0.0, trunk_lr_factor=0.1),
                          AugmentSettings(False, 0, 0), [1.0, 1.0], num_train=10)
    trunk, top = module.parameter_groups()
    assert (trunk["lr"], top["lr"]) == (pytest.approx(0.02), 0.2)
    top_expected = {id(p) for p in [*network.feature.parameters(), *network.heads.parameters()]}
    assert {id(p) for p in top["params"]} == top_expected
    assert {id(p) for p in trunk["params"]} == {id(p) for p in network.trunk.parameters()}
    assert len(top["params"]) == 2 + 2 * 2  # feature Linear + two heads, weight and bias each
    plain = SourceModule(network, DataConfig(input_size=16), OptimSettings(0.2, 0.9, 0.0, 0.0),
                         AugmentSettings(False, 0, 0), [1.0, 1.0], num_train=10)
    (only,) = plain.parameter_groups()
    assert only["lr"] == 0.2 and len(only["params"]) == len(list(network.parameters()))


def test_new_top_shares_the_trunk_and_reinitialises_the_last_two_layers():
    network = net(feature_dim=32)
    fresh = network.with_new_top(16)
    assert fresh.trunk is network.trunk and fresh.feature_dim == 16 and fresh.heads["original"].in_features == 16
    assert not torch.equal(fresh.feature[0].weight[:16], network.feature[0].weight[:16])


def test_joint_loss_is_the_weighted_sum_of_head_losses():
    network = net(heads={"original": 10, "coarse": 3}).eval()
    module = SourceModule(network, DataConfig(input_size=16), OptimSettings(0.1, 0.9, 0.0, 0.0),
                          AugmentSettings(False, 0, 0), [1.0, 0.25], num_train=4)
    module.log = lambda *a, **k: None  # no Trainer attached in a unit test
    images = torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8)
    targets = torch.tensor([[1, 0], [7, 2], [3, 1], [9, 2]])
    loss = module.training_step((images, targets, torch.arange(4)), 0)
    logits = network(DataConfig(input_size=16).normalize_batch(images))
    expected = (torch.nn.functional.cross_entropy(logits["original"], targets[:, 0])
                + 0.25 * torch.nn.functional.cross_entropy(logits["coarse"], targets[:, 1]))
    torch.testing.assert_close(loss, expected)


def test_augmentation_depends_only_on_seed_epoch_and_example():
    flips, shifts = augmentation_params(seed=3, epoch=1, n=50, shift=2)
    again = augmentation_params(seed=3, epoch=1, n=50, shift=2)
    assert torch.equal(flips, again[0]) and torch.equal(shifts, again[1])
    assert not torch.equal(shifts, augmentation_params(seed=3, epoch=2, n=50, shift=2)[1])
    assert shifts.abs().max() <= 2
    image = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4)
    moved = augment(image, torch.tensor([False, True]), torch.tensor([[1, 0], [0, -1]]), pad=1)
    assert torch.equal(moved[0, :, :3], image[0, :, 1:]) and moved[0, :, 3].eq(0).all()  # up one row
    assert torch.equal(moved[1].flip(-1)[:, :, 1:], image[1, :, :, :3]) and moved[1].flip(-1)[:, :, 0].eq(0).all()


def test_schemes_registry_and_label_set_counts():
    assert SCHEMES.list() == ["fsft", "fsft-dr", "muldip", "multitask", "reference"]
    original = LabelSet("original", "original", (0, 1, 2), ("a", "b", "c"))
    coarse = LabelSet("coarse", "random", (0, 0, 1), ("x", "y"))
    assert [p.name for p in create_scheme("muldip").plan([original, coarse])] == ["original", "coarse"]
    (joint,) = create_scheme("multitask").plan([original, coarse])
    assert joint.label_sets == (original, coarse)
    with pytest.raises(ConfigError, match="takes exactly 1 label set"):
        create_scheme("reference").plan([original, coarse])
    with pytest.raises(ConfigError, match="takes at least 2 label set"):
        create_scheme("muldip").plan([original])
    with pytest.raises(ConfigError, match="must be \\{kind: original\\}"):
        create_scheme("fsft").plan([coarse])
    with pytest.raises(UnknownNameError, match="did you mean muldip"):
        create_scheme("muldp")


def test_cli_lists_the_schemes(capsys):
    from unirep.cli import main

    assert main(["list", "schemes"]) == 0
    assert capsys.readouterr().out.split() == ["fsft", "fsft-dr", "muldip", "multitask", "reference"]
