"""The timm adapter: layers, feature sizes, data configs, seeded random init, hub failures."""

from __future__ import annotations

import huggingface_hub.constants
import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.data import resolve_data_config

from unirep.backbones import create_backbone
from unirep.backbones.base import DataConfig
from unirep.errors import ConfigError, WeightsError
from unirep.fileio import sha256_file

# random:<arch>: the adapter's features without weights to fetch (a bare timm name is refused, see the end)
TINY = ["random:test_resnet", "random:test_efficientnet", "random:mobilenetv3_small_050", "random:test_convnext",
        "random:test_vit"]


def _pooled_by_hooks(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Each feature_info module's output, average-pooled: computed by forward hooks, not forward_intermediates."""
    modules = dict(model.named_modules())
    outputs: list[torch.Tensor] = []
    handles = [modules[info["module"]].register_forward_hook(lambda _m, _i, out: outputs.append(out))
               for info in model.feature_info]
    with torch.inference_mode():
        model(x)
    for handle in handles:
        handle.remove()
    return [o.mean(dim=(2, 3)) if o.ndim == 4 else o[:, model.num_prefix_tokens:].mean(dim=1) for o in outputs]


@pytest.mark.parametrize("arch", TINY)
def test_every_layer_gives_pooled_features_of_its_declared_size(arch):
    penultimate = create_backbone(arch, input_size=32, seed=1)
    x = torch.randn(2, 3, 32, 32)
    expected = _pooled_by_hooks(penultimate.model, x)
    assert len(penultimate.feature_layers) == len(expected) >= 4
    for layer, reference in zip(penultimate.feature_layers, expected):
        backbone = create_backbone(arch, input_size=32, seed=1, layer=layer)
        with torch.inference_mode():
            out = backbone(x)
        assert out.shape == (2, backbone.num_features), layer
        assert torch.allclose(out, reference, atol=1e-5), layer
    with torch.inference_mode():
        assert penultimate(x).shape == (2, penultimate.num_features)


def test_penultimate_is_the_pooled_last_stage_for_a_resnet():
    backbone = create_backbone("random:test_resnet", input_size=32)
    last = create_backbone("random:test_resnet", input_size=32, layer="stage4")
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(backbone(x), last(x), atol=1e-6)


def test_mobilenetv3_penultimate_includes_the_pre_logits_layer():
    # head_hidden_size (1024) differs from the last stage's channels (288) here.
    backbone = create_backbone("random:mobilenetv3_small_050", input_size=32)
    assert backbone.num_features == 1024 and backbone.feature_layers[-1] == "stage4"
    assert create_backbone("random:mobilenetv3_small_050", input_size=32, layer="stage4").num_features == 288


def test_timm_module_names_are_aliases_of_stage_names():
    backbone = create_backbone("random:test_resnet", layer="layer3")
    assert backbone.layer == "stage3" and backbone.identity()["layer"] == "stage3"
    assert backbone.num_features == 192


def test_unknown_layer_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"no layer 'stage9': valid layers are stage0 \(= act1\), .*stage4 "):
        create_backbone("random:test_resnet", layer="stage9")


def test_random_init_is_reproducible_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = create_backbone("random:resnet10t", seed=5)
    assert torch.equal(torch.rand(3), expected_next)
    second = create_backbone("random:resnet10t", seed=5)
    other = create_backbone("random:resnet10t", seed=6)
    one, two, three = (b.model.state_dict() for b in (first, second, other))
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert not torch.equal(one["conv1.0.weight"], three["conv1.0.weight"])
    assert first.weights_id == second.weights_id == "random:seed=5" and other.weights_id == "random:seed=6"
    assert not first.has_source_head


def test_data_config_comes_from_timm_pretrained_config():
    backbone = create_backbone("random:resnet10t.c3_in1k")  # the tag's preprocessing, random weights
    timm_cfg = resolve_data_config({}, model=timm.create_model("resnet10t.c3_in1k"))
    dc = backbone.data_config
    assert (dc.input_size, dc.interpolation, dc.crop_pct, dc.mean, dc.std) == (
        timm_cfg["input_size"][-1], timm_cfg["interpolation"], timm_cfg["crop_pct"], timm_cfg["mean"],
        timm_cfg["std"])
    assert (dc.input_size, dc.interpolation) == (176, "bicubic")  # c3_in1k's own values, not DataConfig's defaults
    lite = create_backbone("random:tf_efficientnet_lite0").data_config
    assert lite.mean == lite.std == (0.5, 0.5, 0.5)


def test_input_size_and_data_overrides():
    backbone = create_backbone("random:test_resnet", input_size=48, data_overrides={"crop_pct": 1.0, "mean": 0.4})
    assert backbone.data_config == DataConfig(48, (0.4,) * 3, (0.5,) * 3, "bilinear", 1.0)
    with pytest.raises(ConfigError, match=r"unknown data_overrides \['size'\]; valid keys are"):
        create_backbone("random:test_resnet", data_overrides={"size": 3})
    with pytest.raises(ConfigError, match="interpolation 'lanczos' is not one of"):
        create_backbone("random:test_resnet", data_overrides={"interpolation": "lanczos"})
    with pytest.raises(ConfigError, match="0 < crop_pct <= 1"):
        create_backbone("random:test_resnet", data_overrides={"crop_pct": 1.5})


def test_fixed_size_transformer_is_built_for_the_requested_size():
    backbone = create_backbone("random:test_vit", input_size=32)
    with torch.inference_mode():
        assert backbone(torch.zeros(2, 3, 32, 32)).shape == (2, backbone.num_features)


def test_contradictory_weight_requests_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="either pretrained=True"):
        create_backbone("test_resnet", pretrained=True, weights=tmp_path / "w.pth")
    with pytest.raises(ConfigError, match="random weights by definition: .* name 'test_resnet' without"):
        create_backbone("random:test_resnet", pretrained=True)


def test_hub_weights_unavailable_is_one_weights_error(monkeypatch, tmp_path):
    # The real hub path, with huggingface_hub told it is offline and given an empty cache.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    expected = r"could not fetch timm hub weights .*pass the local file as weights=FILE \(--weights FILE\)$"
    with pytest.raises(WeightsError, match=expected):
        create_backbone("test_resnet", pretrained=True)


def test_bad_model_kwargs_are_a_config_error():
    with pytest.raises(ConfigError, match=r"timm model 'test_resnet' rejected arguments \['wings'\]"):
        create_backbone("random:test_resnet", wings=2)


@pytest.mark.parametrize("name", ["resnet10t", "resnet10t.c3_in1k", "test_vit"])
def test_a_timm_name_without_weights_is_refused_with_the_three_ways_forward(name):
    # timm.create_model(name) would give random weights; filed under `name`, they would pass for pretrained ones.
    with pytest.raises(ConfigError) as info:
        create_backbone(name, input_size=32)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"backbone {name!r} names an architecture, not weights")
    assert "pretrained=True (--pretrained" in message and "weights=FILE (--weights FILE" in message
    assert f"name it 'random:{name}' for random init" in message
    random_init = create_backbone(f"random:{name}", input_size=32)  # the third way, named as what it is
    assert random_init.identity()["name"] == f"random:{name}" and random_init.weights_id == "random:seed=0"


def test_a_pretrained_tag_with_a_local_file_keeps_the_tags_preprocessing(tmp_path):
    path = tmp_path / "resnet10t.c3_in1k.safetensors"
    source = timm.create_model("resnet10t.c3_in1k")
    save_file(source.state_dict(), str(path))
    backbone = create_backbone("resnet10t.c3_in1k", weights=path)
    assert backbone.weights_id == f"sha256:{sha256_file(path)}"
    assert (backbone.data_config.input_size, backbone.data_config.interpolation) == (176, "bicubic")
    state = backbone.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in source.state_dict().items())


def test_pretrained_without_hub_weights_is_refused_before_building():
    name = next(n for n in ("coatnet_nano_cc_224", "botnet50ts_256") if timm.is_model(n))
    assert not timm.list_pretrained(f"{name}.*")  # timm itself would raise a RuntimeError after building it
    with pytest.raises(ConfigError, match=rf"^backbone '{name}': timm has no pretrained weights for this "
                                          rf"architecture: give weights=FILE \(--weights FILE\), or name it "
                                          rf"'random:{name}' for random init$"):
        create_backbone(name, pretrained=True)
