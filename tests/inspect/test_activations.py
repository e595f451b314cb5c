"""Dead and dormant units (unirep.unit_stats) and the `activations` report section: values checked against direct
counts on hand-made activations, a unit forced dead through its weights, ViT tokens reshaped to maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from torch import nn

from unirep.unit_stats import (
    activation_layers,
    assign_stages,
    dormant_ratio,
    measure_unit_stats,
    summarize,
    tokens_to_maps,
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def by_name(stats):
    return {s.name: s for s in stats}


def test_a_unit_forced_dead_is_reported_dead_and_a_live_one_is_not():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.ReLU())
    with torch.no_grad():
        net[0].weight[0].zero_()
        net[0].bias[0] = -1.0  # pre-activation -1 everywhere: channel 0 is zero after the ReLU on every input
        net[0].weight[1].zero_()
        net[0].bias[1] = 0.5  # constant 0.5: alive on every input
    images = torch.randn(40, 3, 8, 8)
    stats = by_name(measure_unit_stats(net, [images[:25], images[25:]]))
    first = stats["1"]
    assert first.inputs == 40 and first.channels == 6 and first.kind == "rectifier"
    assert first.zero_fraction[0] == 1.0 and first.zero_fraction[1] == 0.0
    dead = first.dead(0.99)
    assert dead[0] and not dead[1]
    summary = summarize(list(stats.values()))
    row = next(r for r in summary["layers"] if r["name"] == "1")
    assert 0 in row["dead_channels"] and 1 not in row["dead_channels"]
    assert row["dormant_ratio"]["0.0"] >= 1 / 6  # a dead unit is dormant at tau = 0 too


def test_dead_share_equals_a_direct_count_on_a_hand_made_activation_tensor():
    # Channel c's map is exactly zero on zero_inputs[c] of the 200 inputs, positive elsewhere (one pixel suffices).
    generator = torch.Generator().manual_seed(1)
    zero_inputs = [200, 199, 198, 150, 3, 0]
    acts = torch.zeros(200, len(zero_inputs), 5, 5)
    for c, k in enumerate(zero_inputs):
        alive = torch.randperm(200, generator=generator)[k:]
        pixel = torch.randint(25, (len(alive),), generator=generator)
        acts[alive, c, pixel // 5, pixel % 5] = torch.rand(len(alive), generator=generator) + 0.1
    relu_only = nn.Sequential(nn.ReLU())
    stats = measure_unit_stats(relu_only, acts.split(64))[0]
    direct = (acts.flatten(2) == 0).all(dim=2).float().mean(dim=0).numpy()
    np.testing.assert_allclose(stats.zero_fraction, direct)
    np.testing.assert_allclose(stats.zero_fraction, np.array(zero_inputs) / 200)
    for q in (0.99, 0.995, 1.0, 0.7):
        expected = float(np.mean(np.array(zero_inputs) / 200 >= q))
        assert summarize([stats], dead_quantile=q)["layers"][0]["dead_share"] == pytest.approx(expected)
    assert summarize([stats], dead_quantile=0.99)["layers"][0]["dead_share"] == pytest.approx(3 / 6)  # 200, 199, 198


def test_dormant_ratio_equals_sokar_et_al_formula_for_any_activation():
    torch.manual_seed(2)
    x = torch.randn(64, 8, 6, 6)
    x[:, 3] *= 0.01  # planted near-silent units
    x[:, 5] *= 0.05
    for activation in (nn.SiLU(), nn.GELU(), nn.ReLU()):
        stats = measure_unit_stats(nn.Sequential(activation), [x[:30], x[30:]])[0]
        a = activation(x).abs().double()
        mean_abs = a.mean(dim=(0, 2, 3)).numpy()
        score = mean_abs / mean_abs.mean()
        np.testing.assert_allclose(stats.mean_abs, mean_abs, rtol=1e-6)
        row = summarize([stats], dormant_taus=(0.0, 0.1, 0.5))["layers"][0]
        for tau in (0.0, 0.1, 0.5):
            assert row["dormant_ratio"][str(tau)] == pytest.approx(float(np.mean(score <= tau)))
        assert dormant_ratio(mean_abs, 0.1) == pytest.approx(float(np.mean(score <= 0.1)))
        if isinstance(activation, nn.ReLU):
            assert row["dead_share"] is not None
        else:  # no exact zeros: only the dormant ratio applies
            assert row["kind"] == "smooth" and row["dead_share"] is None and row["dead_channels"] is None
    assert float(np.mean(score <= 0.1)) >= 2 / 8  # the planted units are dormant at tau 0.1


def test_vit_tokens_become_maps_on_the_patch_grid_with_the_class_token_dropped():
    b, grid, channels = 2, (3, 4), 5
    tokens = torch.zeros(b, 1 + grid[0] * grid[1], channels)
    tokens[:, 0, :] = 99.0  # class token: must not appear in the map
    tokens[1, 1 + 2 * grid[1] + 1, 3] = 7.0  # patch (row 2, col 1), channel 3 of the second image
    maps = tokens_to_maps(tokens, num_prefix_tokens=1, grid=grid)
    assert maps.shape == (b, channels, *grid)
    assert maps[1, 3, 2, 1] == 7.0 and maps.abs().sum() == 7.0
    with pytest.raises(ValueError, match="square"):
        tokens_to_maps(tokens, 1)  # 12 patches: not a square without the grid


def test_hooks_on_a_real_vit_measure_its_mlp_activations_as_patch_maps():
    torch.manual_seed(0)
    vit = timm.create_model("test_vit", num_classes=0)
    layers = activation_layers(vit)
    assert layers and all(layer.kind == "smooth" and layer.module_type == "GELU" for layer in layers)
    assert [layer.stage for layer in layers] == [f"blocks.{i}" for i in range(len(layers))]
    stats = measure_unit_stats(vit, [torch.randn(2, 3, 160, 160)])
    hidden = vit.blocks[0].mlp.fc1.out_features
    assert all(s.map_size == tuple(vit.patch_embed.grid_size) and s.channels == hidden for s in stats)
    assert summarize(stats)["dead_share_applies"] is False


def test_a_module_called_twice_per_forward_is_two_sites_and_stages_follow_feature_info():
    class SharedRelu(nn.Module):  # torchvision's ResNet blocks call one ReLU module twice
        def __init__(self):
            super().__init__()
            self.conv, self.relu = nn.Conv2d(3, 4, 1), nn.ReLU()

        def forward(self, x):
            return self.relu(-self.relu(self.conv(x)))  # the second call sees <= 0 inputs: always dead

    stats = by_name(measure_unit_stats(SharedRelu(), [torch.randn(8, 3, 4, 4)]))
    assert set(stats) == {"relu", "relu#2"}
    assert stats["relu#2"].zero_fraction.tolist() == [1.0] * 4
    resnet = timm.create_model("resnet18")
    names = [layer.name for layer in activation_layers(resnet)]
    stages = assign_stages(resnet, names)
    assert stages["act1"] == "act1" and stages["layer1.0.act1"] == "layer1" and stages["layer4.1.act2"] == "layer4"
    # a source checkpoint of two networks: each trunk keeps its own stages, each feature layer is its own head
    from unirep.backbones.source_networks import NetworkSpec, SourceNetwork

    two = nn.ModuleDict({"networks": nn.ModuleList(SourceNetwork(NetworkSpec("test_resnet", {"a": 3}))
                                                   for _ in range(2))})
    stages = {layer.name: layer.stage for layer in activation_layers(two)}
    assert stages["networks.0.trunk.layer2.0.act1"] == "networks.0.trunk.layer2"
    assert stages["networks.1.trunk.layer2.0.act1"] == "networks.1.trunk.layer2"
    assert stages["networks.0.feature.1"] == "networks.0.head" and stages["networks.1.feature.1"] == "networks.1.head"


# ---- the `activations` section -------------------------------------------------------------------------------


def _context(backbone, settings=None):
    from unirep.inspect.context import InspectContext

    images = torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return InspectContext.for_testing(backbone, images, torch.arange(40) % 4, classifier=nn.Identity(),
                                      n_images=40, settings={"activations": {"images": 40, "map_images": 2,
                                                                             **(settings or {})}})


def test_activations_section_finds_a_killed_stage_and_differences_highlight_it():
    import copy

    from unirep.backbones import create_backbone
    from unirep.inspect.activations import Activations

    backbone = create_backbone("random:resnet18", input_size=32)
    killed = copy.deepcopy(backbone)  # create_backbone is cached: never edit its object
    bn = killed.model.layer2[0].bn1
    with torch.no_grad():  # half the channels of layer2.0's first ReLU: pre-activation -1 everywhere
        bn.weight[:64], bn.bias[:64] = 0.0, -1.0
    section = Activations()
    a, b = section.run(_context(backbone)), section.run(_context(killed))
    layer_a = next(r for r in a.numbers["layers"] if r["name"] == "model.layer2.0.act1")
    layer_b = next(r for r in b.numbers["layers"] if r["name"] == "model.layer2.0.act1")
    assert set(range(64)) <= set(layer_b["dead_channels"]) and layer_b["dead_share"] >= 0.5
    assert layer_a["dead_share"] < 0.5
    stage = b.numbers["stages"]["model.layer2"]
    newly_dead = len(set(layer_b["dead_channels"]) - set(layer_a["dead_channels"]))
    assert a.numbers["settings"]["dead_quantile"] == 0.99 and a.numbers["settings"]["images"] == 40
    diff = section.differences(a, b)
    assert diff.numbers["stages"]["model.layer2"]["dead_share"][2] == pytest.approx(
        newly_dead / stage["rectifier_channels"], abs=0.02)  # other layer2 units may die or wake downstream
    assert "model.layer2 dead_share" in diff.numbers["changed"]
    assert "model.layer1 dead_share" not in diff.numbers["changed"]  # upstream of the change: identical
    assert diff.numbers["stages"]["model.layer1"]["dead_share"][2] == 0.0
    assert 'class="delta"' in diff.html
    assert "<table" in a.html and "Plotly.newPlot" in a.html and "activation maps of layer stage0" in a.html
    json.dumps(a.numbers), json.dumps(diff.numbers)  # JSON-able


def test_activations_section_says_only_the_dormant_ratio_applies_to_a_silu_network():
    from unirep.backbones import create_backbone
    from unirep.inspect.activations import Activations

    result = Activations().run(_context(create_backbone("random:test_efficientnet", input_size=32), {"images": None}))
    assert result.numbers["settings"]["images"] == 40  # unset: the context's --images budget
    assert result.numbers["dead_share_applies"] is False and result.numbers["overall_dead_share"] is None
    assert all(row["dead_share"] is None for row in result.numbers["stages"].values())
    assert any("SiLU network" in note and "only the dormant ratio" in note for note in result.notes)
