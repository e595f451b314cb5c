"""Feature extraction + cache, on a small real conv net and real images (sklearn digits)."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from unirep.backbones.base import Backbone, DataConfig
from unirep.errors import DataError
from unirep.features import ExtractionSettings, FeatureCache, extract_features
from unirep.tasks.base import ImageSet, SplitManifest


class TinyConvBackbone(Backbone):
    def __init__(self, scale: float = 1.0):
        super().__init__("tiny-conv", DataConfig(input_size=16, crop_pct=1.0), weights_id=f"random:scale={scale}")
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.scale = scale
        self.num_features = 8

    def forward(self, x):
        return self.net(x) * self.scale


@pytest.fixture(scope="module")
def digits_images() -> ImageSet:
    digits = load_digits()
    images = (digits.images[:150] * 255 / 16).astype(np.uint8)
    return ImageSet.from_array(images, digits.target[:150], [f"d{i}" for i in range(150)], "sklearn-digits")


def manifest(name="digits") -> SplitManifest:
    return SplitManifest(task=name, seed=0, data_sha256="x", splits={"train": ["d0"], "val": [], "test": []})


def test_extraction_equals_per_image_transform_and_forward(digits_images):
    backbone = TinyConvBackbone().eval()
    got = extract_features(backbone, digits_images, ExtractionSettings(batch_size=32))
    transform = backbone.data_config.transform()
    with torch.no_grad():
        batch = torch.stack([transform(digits_images[i][0]) for i in range(len(digits_images))])
        expected = backbone(batch).numpy()
    assert got.features.shape == (150, 8) and got.features.dtype == np.float32
    np.testing.assert_allclose(got.features, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got.labels, digits_images.labels)


def _read_one_by_one(images: ImageSet) -> ImageSet:
    """The same examples without the array backing: extraction must read them as PIL images, one at a time."""
    return ImageSet(images.ids, images.labels, lambda i: images[i][0])


@pytest.mark.parametrize("channels", [1, 3])
def test_stored_pixel_batches_equal_the_images(channels):
    rng = np.random.default_rng(0)
    shape = (40, 20, 24) if channels == 1 else (40, 20, 24, 3)
    images = ImageSet.from_array(rng.integers(0, 256, shape, dtype=np.uint8), np.arange(40) % 4,
                                 [f"x{i}" for i in range(40)], "random")
    subset = images.subset([5, 30, 7, 12, 0]).subset([4, 1, 2])  # rows 0, 30, 7 of the array
    stored = subset.stored_pixels([0, 2, 1])
    assert stored.shape == (3, channels, 20, 24) and stored.dtype == torch.uint8
    expected = torch.stack([torch.from_numpy(np.array(subset[i][0])).permute(2, 0, 1) for i in (0, 2, 1)])
    assert torch.equal(stored.expand(-1, 3, -1, -1), expected)
    assert _read_one_by_one(subset).stored_pixels([0]) is None


@pytest.mark.parametrize("channels", [1, 3])
def test_stored_pixel_path_gives_the_features_of_the_image_path(channels):
    # Resize + centre crop of a non-square image (crop_pct < 1), grey resized as one channel on the fast path.
    rng = np.random.default_rng(1)
    shape = (70, 20, 24) if channels == 1 else (70, 20, 24, 3)
    images = ImageSet.from_array(rng.integers(0, 256, shape, dtype=np.uint8), np.zeros(70, dtype=int),
                                 [f"x{i}" for i in range(70)], "random")
    backbone = TinyConvBackbone()
    backbone.data_config = DataConfig(input_size=16, crop_pct=0.875)
    settings = ExtractionSettings(batch_size=32)
    fast = extract_features(backbone, images, settings).features
    np.testing.assert_array_equal(fast, extract_features(backbone, _read_one_by_one(images), settings).features)


def test_bf16_channels_last_close_to_fp32(digits_images):
    backbone = TinyConvBackbone()
    fp32 = extract_features(backbone, digits_images, ExtractionSettings())
    fast = extract_features(backbone, digits_images, ExtractionSettings(precision="bf16", channels_last=True))
    rel = np.abs(fast.features - fp32.features).max() / np.abs(fp32.features).max()
    assert 0 < rel < 0.05  # bf16 changes numbers a little, never a lot


def test_cache_reuses_and_keys_on_what_changes_numbers(tmp_path, digits_images):
    cache, settings = FeatureCache(tmp_path), ExtractionSettings()
    backbone = TinyConvBackbone()
    first = cache.get_or_extract(backbone, manifest(), "train", digits_images, settings)
    second = cache.get_or_extract(backbone, manifest(), "train", digits_images, settings)
    assert not first.cached and second.cached
    np.testing.assert_array_equal(first.features, second.features)
    keys = {
        cache.key(backbone.identity(), manifest(), "train", settings),
        cache.key(backbone.identity(), manifest("other"), "train", settings),
        cache.key(backbone.identity(), manifest(), "val", settings),
        cache.key(backbone.identity(), manifest(), "train", ExtractionSettings(precision="bf16")),
        cache.key(TinyConvBackbone(scale=2.0).identity(), manifest(), "train", settings),
    }
    assert len(keys) == 5
    # batch size and workers do not change the numbers, so they share the entry
    assert cache.key(backbone.identity(), manifest(), "train", ExtractionSettings(batch_size=7)) in keys
    assert len(list(tmp_path.rglob("*.npz"))) == 1 and not list(tmp_path.rglob("*.tmp"))


def test_non_finite_features_raise_and_are_not_cached(tmp_path, digits_images):
    backbone = TinyConvBackbone(scale=float("nan"))
    with pytest.raises(DataError, match=r"NaN/Inf.*nothing was cached"):
        FeatureCache(tmp_path).get_or_extract(backbone, manifest(), "train", digits_images, ExtractionSettings())
    assert not list(tmp_path.rglob("*.npz"))


def test_fp16_on_cpu_is_a_config_error(digits_images):
    from unirep.errors import ConfigError

    with pytest.raises(ConfigError, match="bf16 on CPU"):
        extract_features(TinyConvBackbone(), digits_images, ExtractionSettings(precision="fp16", device="cpu"))


def test_extraction_leaves_the_module_trainable(digits_images):
    """The module is moved to channels_last outside inference mode: its parameters stay ordinary tensors that a
    caller can train afterwards (fine-tuning's LP-FT extracts features from the net it then fine-tunes)."""
    backbone = TinyConvBackbone()
    extract_features(backbone, digits_images, ExtractionSettings(batch_size=64, channels_last=True))
    conv = backbone.net[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)  # it was converted...
    assert not any(p.is_inference() for p in backbone.parameters())  # ...but not into inference tensors
    backbone.train()
    loss = backbone(torch.randn(4, 3, 16, 16)).square().sum()
    loss.backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
