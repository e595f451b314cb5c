"""create_backbone over the whole registry, name resolution, and the raw-pixels baseline."""

from __future__ import annotations

import typing

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from unirep.backbones import BACKBONE_MODULES, BACKBONES, create_backbone, list_backbones
from unirep.errors import ConfigError, DataError, UnknownNameError
from unirep.fileio import sha256_file

IDENTITY_KEYS = {"name", "class", "weights_id", "layer", "data_config", "num_features"}


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 50, 3), dtype=np.uint8)) for i in range(n)]




def _modality(name: str) -> str:
    """The `modality` of the class a backbone's factory says it returns ("image" when it says nothing)."""
    try:
        returned = typing.get_type_hints(BACKBONES.get(name)).get("return")
    except (NameError, TypeError):
        returned = None
    return getattr(returned, "modality", "image")


# Waveform backbones (`modality = "waveform"`: birdnet, wave-logmel-stats) take clips, not images: tests/audio.
IMAGE_BACKBONES = [n for n in list_backbones() if _modality(n) == "image"]


@pytest.mark.parametrize("name", IMAGE_BACKBONES)
def test_every_registered_backbone_extracts_features(name):
    backbone = create_backbone(name, input_size=32)
    transform = backbone.data_config.transform()
    x = torch.stack([transform(image) for image in _images(2)])
    assert x.shape == (2, 3, 32, 32)
    with torch.inference_mode():
        features = backbone(x)
    assert features.shape == (2, backbone.num_features) and torch.isfinite(features).all()
    assert IDENTITY_KEYS <= set(backbone.identity()) and backbone.identity()["name"] == name
    assert not backbone.training


def test_registered_names():
    assert {"mobilenetv2_100.packaged_in1k", "raw-pixels", "tf_efficientnet_lite0.packaged_in1k",
            "tf_efficientnet_lite1.packaged_in1k"} <= set(list_backbones())
    assert list_backbones("*.packaged_in1k") == ["mobilenetv2_100.packaged_in1k", "tf_efficientnet_lite0.packaged_in1k",
                                                 "tf_efficientnet_lite1.packaged_in1k"]
    assert "unirep.backbones.packaged" in BACKBONE_MODULES


def test_any_timm_name_works_without_registration(tmp_path):
    random_init = create_backbone("random:resnet10t", input_size=32)
    assert random_init.num_features == 512 and random_init.weights_id == "random:seed=0"
    path = tmp_path / "resnet10t.safetensors"
    save_file(random_init.model.state_dict(), str(path))
    from_file = create_backbone("resnet10t", weights=path, input_size=32)
    assert from_file.num_features == 512 and from_file.weights_id == f"sha256:{sha256_file(path)}"
    state = from_file.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in random_init.model.state_dict().items())


@pytest.mark.parametrize(("name", "suggestion"), [
    ("resnet1t", "resnet10t"),  # from timm.list_models
    ("mobilenetv2_10", "mobilenetv2_100"),
    ("raw-pixel", "raw-pixels"),
    ("random:resnet1t", "random:resnet10t"),
])
def test_unknown_names_suggest_close_ones(name, suggestion):
    with pytest.raises(UnknownNameError, match=f"unknown backbone '{name}'.*did you mean .*{suggestion}"):
        create_backbone(name)


@pytest.mark.parametrize(("name", "closest"), [
    ("resnet18.a1_in2k", "resnet18.a1_in1k"),  # from timm's pretrained tags
    ("mobilenetv2_100.packaged", "mobilenetv2_100.packaged_in1k"),  # from the registry
])
def test_unknown_pretrained_tag_suggests_the_closest_tags(name, closest):
    arch, tag = name.split(".")
    with pytest.raises(UnknownNameError, match=rf"'{arch}' has no pretrained tag '{tag}'; closest: {closest},"):
        create_backbone(name)


def test_arguments_a_factory_does_not_take_are_refused():
    with pytest.raises(ConfigError, match=r"'raw-pixels' does not take layer, weights \(it takes: input_size"):
        create_backbone("raw-pixels", weights="w.pth", layer="stage1")
    with pytest.raises(ConfigError, match="does not take weights"):
        create_backbone("mobilenetv2_100.packaged_in1k", weights="w.pth")


def test_raw_pixels_are_the_normalised_resized_image():
    backbone = create_backbone("raw-pixels", input_size=8)
    assert backbone.num_features == 3 * 8 * 8 and backbone.weights_id == "none"
    image = _images(1)[0]
    with torch.inference_mode():
        features = backbone(backbone.data_config.transform()(image)[None])[0].numpy()
    # Independent path: PIL resize of the shorter side to 8, centre crop, numpy normalisation.
    w, h = image.size
    small = np.asarray(image.resize((8, round(8 * h / w)) if w < h else (round(8 * w / h), 8), Image.BILINEAR))
    top, left = (small.shape[0] - 8) // 2, (small.shape[1] - 8) // 2
    crop = small[top:top + 8, left:left + 8].astype(np.float32) / 255
    mean, std = np.array(backbone.data_config.mean), np.array(backbone.data_config.std)
    expected = ((crop - mean) / std).transpose(2, 0, 1).ravel()
    assert np.abs(features - expected).max() < 0.1  # antialiasing filters differ slightly
    assert np.corrcoef(features, expected)[0, 1] > 0.99


def test_raw_pixels_default_size_and_wrong_input():
    backbone = create_backbone("raw-pixels")
    assert backbone.data_config.input_size == 32 and backbone.num_features == 3072
    with pytest.raises(DataError, match=r"expects images \(B, 3, 32, 32\)"):
        backbone(torch.zeros(1, 3, 64, 64))

