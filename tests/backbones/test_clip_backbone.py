"""CLIP backbones (`clip:<open_clip model>`) on a tiny open_clip config with random weights, saved as a local
.safetensors file and loaded back the way a user loads OpenAI's: `create_backbone("clip:<model>", weights=FILE)`.
The reference everywhere is open_clip itself, loading the same file with its own loader."""

from __future__ import annotations

import time
import warnings

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from unirep.backbones import check_backbone, create_backbone
from unirep.backbones.clip import ClipName, download_tag_weights
from unirep.errors import ConfigError, WeightsError
from unirep.features import ExtractionSettings, FeatureCache, extract_features
from unirep.tasks import create_task

TINY = "unirep-test-clip"


@pytest.fixture(scope="module")
def tiny(tiny_clip):
    """(weights file, open_clip's own model loaded from it, config file); a non-default logit scale, so a test can
    tell the file's from the init's."""
    config, weights = tiny_clip(TINY, seed=0, logit_scale=50.0)
    reference = open_clip.create_model(TINY, pretrained=str(weights)).eval()
    return weights, reference, config


@pytest.fixture(scope="module")
def images():
    return create_task("sklearn-digits").split("val").subset(np.arange(24))


def batch(backbone, images) -> torch.Tensor:
    return torch.stack([backbone.data_config.transform()(images[i][0]) for i in range(len(images))])


def test_features_equal_open_clips_encode_image(tiny, images):
    weights, reference, _ = tiny
    backbone = create_backbone(f"clip:{TINY}", weights=weights)
    extracted = extract_features(backbone, images, ExtractionSettings(batch_size=10))
    with torch.no_grad():
        expected = reference.encode_image(batch(backbone, images)).numpy()
    assert extracted.features.shape == (24, 32) and backbone.num_features == 32
    np.testing.assert_allclose(extracted.features, expected, rtol=1e-4, atol=1e-5)
    identity = backbone.identity()
    assert identity["weights_id"].startswith("sha256:") and identity["architecture"] == f"open_clip:{TINY}"
    assert identity["params"] == sum(p.numel() for p in reference.visual.parameters())  # the image tower's
    # OpenAI's preprocessing, as open_clip's eval transform: bicubic, shorter side to 32 px, centre crop
    assert backbone.data_config.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert (backbone.data_config.input_size, backbone.data_config.crop_pct) == (32, 1.0)


def test_a_config_file_name_loads_the_same_network(tiny, images):
    weights, reference, config = tiny
    backbone = create_backbone(f"clip:{config}", weights=weights)
    x = batch(backbone, images)
    with torch.no_grad():
        np.testing.assert_allclose(backbone(x).numpy(), reference.encode_image(x).numpy(), rtol=1e-4, atol=1e-5)


def test_layers_against_open_clips_own_intermediates(tiny, images):
    weights, reference, _ = tiny
    x = batch(create_backbone(f"clip:{TINY}", weights=weights), images)
    visual = reference.visual
    with torch.no_grad():
        embedding = reference.encode_image(x)
        for block in (0, 1):
            out = visual.forward_intermediates(x, indices=[block], output_fmt="NLC", output_extra_tokens=True,
                                               intermediates_only=True)
            cls = out["image_intermediates_prefix"][0][:, 0]
            ours = create_backbone(f"clip:{TINY}", weights=weights, layer=f"block{block}")(x)
            np.testing.assert_allclose(ours.numpy(), cls.numpy(), rtol=1e-4, atol=1e-5)
        pre = create_backbone(f"clip:{TINY}", weights=weights, layer="pre-projection")(x)
        np.testing.assert_allclose((pre @ visual.proj).numpy(), embedding.numpy(), rtol=1e-4, atol=1e-5)
        # Local embeddings: the last block with every token attending to itself only (an attention mask), then
        # ln_post and the projection - computed here with open_clip's own block, not the backbone's value path.
        tokens = visual._embeds(x)
        tokens = visual.transformer.resblocks[0](tokens)
        n = tokens.shape[1]
        self_only = torch.full((n, n), float("-inf")).fill_diagonal_(0.0)
        local = visual.ln_post(visual.transformer.resblocks[1](tokens, attn_mask=self_only)[:, 1:]) @ visual.proj
        both = create_backbone(f"clip:{TINY}", weights=weights, layer="tokens")
        flat = both(x)
        assert both.num_features == flat.shape[1] == 17 * 32 and both.num_patches == 16
        np.testing.assert_allclose(flat[:, :32].numpy(), embedding.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(flat[:, 32:].reshape(len(x), 16, 32).numpy(), local.numpy(), rtol=1e-4, atol=1e-5)
        mean = create_backbone(f"clip:{TINY}", weights=weights, layer="patch-mean")(x)
        np.testing.assert_allclose(mean.numpy(), local.mean(dim=1).numpy(), rtol=1e-4, atol=1e-5)


def test_layers_are_cached_like_any_features(tiny, images, tmp_path):
    weights, _, _ = tiny
    task = create_task("sklearn-digits")
    cache, settings = FeatureCache(tmp_path), ExtractionSettings(batch_size=64)
    tokens = create_backbone(f"clip:{TINY}", weights=weights, layer="tokens")
    first = cache.get_or_extract(tokens, task.manifest, "val", task.split("val"), settings)
    again = cache.get_or_extract(create_backbone(f"clip:{TINY}", weights=weights, layer="tokens"), task.manifest,
                                 "val", task.split("val"), settings)
    assert not first.cached and again.cached and np.array_equal(first.features, again.features)
    plain = create_backbone(f"clip:{TINY}", weights=weights)
    assert FeatureCache.key(plain.identity(), task.manifest, "val", settings) != \
        FeatureCache.key(tokens.identity(), task.manifest, "val", settings)


def test_the_text_tower_is_open_clips_and_the_files_logit_scale(tiny):
    weights, reference, _ = tiny
    backbone = create_backbone(f"clip:{TINY}", weights=weights)
    prompts = ["a photo of a zero.", "a photo of a seven.", "itap of a cat."]
    tokenizer = open_clip.get_tokenizer(TINY)
    with torch.no_grad():
        expected = reference.encode_text(tokenizer(prompts)).numpy()
    np.testing.assert_allclose(backbone.text_tower.encode(prompts), expected, rtol=1e-4, atol=1e-5)
    assert backbone.text_tower.logit_scale == pytest.approx(50.0, rel=1e-5)
    assert not any(name.startswith("text") for name, _ in backbone.named_parameters())  # not the backbone's


def test_a_larger_input_size_resamples_the_position_embedding(tiny):
    weights, _, _ = tiny
    backbone = create_backbone(f"clip:{TINY}", weights=weights, input_size=64)
    assert backbone.num_patches == 64 and backbone(torch.zeros(2, 3, 64, 64)).shape == (2, 32)


def test_random_init_is_named_and_seeded():
    a = create_backbone(f"random:clip:{TINY}", seed=1)
    b = create_backbone(f"random:clip:{TINY}", seed=1)
    assert a.weights_id == "random:seed=1"
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    (f"clip:{TINY}", {}, "names an architecture, not weights"),
    (f"clip:{TINY}", {"pretrained": True}, "needs a pretrained tag"),
    ("clip:ViT-B-33", {"weights": "x.safetensors"}, "did you mean"),
    (f"random:clip:{TINY}", {"weights": "x.safetensors"}, "random weights by definition"),
])
def test_bad_requests_are_refused_in_one_line(tiny, name, kwargs, message):
    with pytest.raises(ConfigError, match=message) as caught:
        create_backbone(name, **kwargs)
    assert "\n" not in str(caught.value)


def test_bad_names_tags_and_files_are_checked_before_any_work(tiny, tmp_path):
    with pytest.raises(ConfigError, match="names an architecture"):
        check_backbone("clip:ViT-B-32")
    with pytest.raises(ConfigError, match="no pretrained tag 'opena'.*openai"):
        check_backbone("clip:ViT-B-32.opena", pretrained=True)
    with pytest.raises(WeightsError, match="not found"):
        check_backbone(f"clip:{TINY}", weights=tmp_path / "missing.safetensors")
    check_backbone(f"clip:{TINY}", weights=tiny[0])  # a good request passes


def test_torchscript_and_code_pickles_are_refused_in_one_line(tiny, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated; OpenAI's archives are such files
        torch.jit.script(nn.Linear(2, 2)).save(str(tmp_path / "ViT-B-32.pt"))
    with pytest.raises(WeightsError, match="TorchScript archive.*safetensors release") as caught:
        create_backbone(f"clip:{TINY}", weights=tmp_path / "ViT-B-32.pt")
    assert "\n" not in str(caught.value) and "open_clip_model.safetensors" in str(caught.value)
    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "module.pt")  # a pickled module: loading it runs code
    with pytest.raises(WeightsError, match="was refused") as caught:
        create_backbone(f"clip:{TINY}", weights=tmp_path / "module.pt")
    assert "\n" not in str(caught.value)


def test_an_image_tower_file_is_refused_with_what_is_missing(tiny, tmp_path):
    weights, reference, _ = tiny
    save_file({f"visual.{k}": v.contiguous() for k, v in reference.visual.state_dict().items()},
              str(tmp_path / "visual.safetensors"))
    with pytest.raises(WeightsError, match="image tower only"):
        create_backbone(f"clip:{TINY}", weights=tmp_path / "visual.safetensors")


def test_an_offline_hub_fails_at_once(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))  # nothing cached
    parsed = ClipName.parse("clip:ViT-B-32-quickgelu.openai")
    cfg = parsed.pretrained_cfg()
    assert cfg["quick_gelu"] and cfg["hf_hub"] == "timm/vit_base_patch32_clip_224.openai/"
    for offline, endpoint in ((True, hub.ENDPOINT), (False, "http://127.0.0.1:9")):  # switch on; port closed
        monkeypatch.setattr(hub, "HF_HUB_OFFLINE", offline)
        monkeypatch.setattr(hub, "ENDPOINT", endpoint)
        start = time.perf_counter()
        with pytest.raises(WeightsError, match="hub is unreachable.*hf download timm/vit_base_patch32_clip_224.openai "
                                               "open_clip_model.safetensors"):
            download_tag_weights(parsed, cfg)
        assert time.perf_counter() - start < 5


def test_timms_clip_names_load_the_same_file(tiny, images):
    """timm's CLIP architecture (here vit_base_patch32_clip_224 shrunk to the tiny tower by model kwargs, since the
    full ViT-B is 88M parameters) loads open_clip's file through timm's own checkpoint filter: its head is CLIP's
    projection, so head(pre-logits) is open_clip's image embedding."""
    weights, reference, _ = tiny
    backbone = create_backbone("vit_base_patch32_clip_224.openai", weights=weights, input_size=32, patch_size=8,
                               embed_dim=64, depth=2, num_heads=2, num_classes=32)
    x = batch(create_backbone(f"clip:{TINY}", weights=weights), images)
    with torch.no_grad():
        embedding = backbone.model.get_classifier()(backbone(x))
        np.testing.assert_allclose(embedding.numpy(), reference.encode_image(x).numpy(), rtol=1e-4, atol=1e-5)
