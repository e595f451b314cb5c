"""The filter noise score (unirep.unit_stats.filter_noise_scores) and the `filters` report section: white noise
against smooth filters, the score against a direct padded-DFT computation, random init against real ImageNet
weights of the same architecture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from unirep.unit_stats import (
    NOISE_CUTOFF,
    NOISE_PAD,
    filter_noise_scores,
    first_layer_noise_score,
    reference_position,
    spatial_convs,
)


def gaussian(k: int, sigma: float) -> torch.Tensor:
    x = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    return torch.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))


def direct_score(weight: torch.Tensor) -> np.ndarray:
    """The definition computed the obvious way: the padded 2-D DFT of every slice, high-band over total energy."""
    spectrum = torch.fft.fft2(weight.detach().double(), s=(NOISE_PAD, NOISE_PAD)).abs() ** 2
    f = torch.fft.fftfreq(NOISE_PAD, dtype=torch.float64)
    high = (f[:, None] ** 2 + f[None, :] ** 2).sqrt() > NOISE_CUTOFF
    return (spectrum[..., high].sum(dim=(1, 2)) / spectrum.sum(dim=(1, 2, 3))).numpy()


@pytest.mark.parametrize("k", [3, 5, 7])
def test_white_noise_filters_score_noisier_than_smooth_gaussian_ones(k):
    generator = torch.Generator().manual_seed(k)
    noise = torch.randn(200, 3, k, k, generator=generator)
    smooth = gaussian(k, sigma=max(1.0, k / 4)).expand(1, 3, k, k)
    noise_scores, smooth_score = filter_noise_scores(noise), filter_noise_scores(smooth)[0]
    assert np.all((noise_scores >= 0) & (noise_scores <= 1))
    assert smooth_score < 0.2 and np.percentile(noise_scores, 5) > 0.5  # measured: <= 0.18 and >= 0.67
    # i.i.d. noise has a flat expected spectrum: its expected share is the share of DFT points above the cutoff
    f = np.fft.fftfreq(NOISE_PAD)
    flat_share = np.mean(np.hypot(f[:, None], f[None, :]) > NOISE_CUTOFF)
    assert noise_scores.mean() == pytest.approx(flat_share, abs=0.03)
    # a filter replaced by white noise in a smooth layer scores noisier than the rest
    layer = smooth.repeat(4, 1, 1, 1).clone()
    layer[2] = noise[0]
    scores = filter_noise_scores(layer)
    assert scores.argmax() == 2 and scores[2] > scores[0] + 0.3


def test_the_score_equals_the_padded_dft_energy_share_computed_directly():
    weight = torch.randn(16, 4, 3, 5, generator=torch.Generator().manual_seed(3))
    weight[0] = 0.0
    np.testing.assert_allclose(filter_noise_scores(weight)[1:], direct_score(weight)[1:], rtol=1e-9, atol=1e-12)
    assert filter_noise_scores(weight)[0] == 0.0  # an all-zero filter scores 0


def test_one_by_one_convolutions_have_no_score_and_are_listed_apart():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, (1, 3)))
    spatial, pointwise = spatial_convs(net)
    assert [name for name, _ in spatial] == ["0", "2"] and pointwise == ["1"]
    with pytest.raises(ValueError, match="1 x 1"):
        filter_noise_scores(net[1].weight)


def test_reference_position_is_zero_at_random_init_and_one_at_trained():
    assert reference_position(0.8, 0.8, 0.6) == 0.0
    assert reference_position(0.6, 0.8, 0.6) == 1.0
    assert reference_position(0.7, 0.8, 0.6) == pytest.approx(0.5)
    assert reference_position(0.7, 0.5, 0.5) is None


def test_random_init_mobilenetv2_first_layer_is_noisier_than_its_packaged_imagenet_weights():
    from unirep.backbones import create_backbone

    trained = first_layer_noise_score(create_backbone("mobilenetv2_100.packaged_in1k"))
    untrained = first_layer_noise_score(create_backbone("random:mobilenetv2_100", seed=0))
    # measured: 0.65 (trained) vs 0.84 (random); the gap is far beyond seed-to-seed variation of the init
    assert trained < untrained - 0.1


# ---- the `filters` section -----------------------------------------------------------------------------------


def _context(backbone, references):
    from unirep.inspect.context import InspectContext

    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return InspectContext.for_testing(backbone, images, torch.arange(8) % 2, classifier=nn.Identity(),
                                      references=references)


def test_filters_section_places_trained_weights_at_one_and_random_init_at_zero():
    import json

    from unirep.backbones import create_backbone
    from unirep.inspect.filters import Filters

    trained = create_backbone("mobilenetv2_100.packaged_in1k", input_size=32)
    untrained = create_backbone("random:mobilenetv2_100", input_size=32, seed=0)
    references = {"random-init": untrained, "trained": trained}
    section = Filters()
    on_trained = section.run(_context(trained, references))
    on_untrained = section.run(_context(untrained, references))
    first = on_trained.numbers["first_layer"]
    assert first["name"] == "model.conv_stem"
    assert first["median"] == pytest.approx(float(np.median(direct_score(trained.model.conv_stem.weight))))
    assert first["position"] == pytest.approx(1.0) and on_untrained.numbers["first_layer"]["position"] == 0.0
    assert on_trained.numbers["median_position"] == pytest.approx(1.0)
    # every spatial conv scored (3 x 3 depthwise ones included), every 1 x 1 conv listed apart and said so
    rows = on_trained.numbers["layers"]
    assert all(r["kernel"] != [1, 1] and len(r["scores"]) == r["filters"] for r in rows) and len(rows) == 18
    assert len(on_trained.numbers["pointwise_convs"]) == 34
    assert any("1 × 1 convolutions have no spatial kernel" in note for note in on_trained.notes)
    assert on_trained.html.count("first-layer filters of") == 3  # this backbone and both references
    diff = section.differences(on_untrained, on_trained)
    assert diff.numbers["layers"]["model.conv_stem"]["median"][2] == pytest.approx(
        first["median"] - on_untrained.numbers["first_layer"]["median"])
    assert "model.conv_stem" in diff.numbers["changed"] and 'class="delta"' in diff.html
    json.dumps(on_trained.numbers), json.dumps(diff.numbers)


def test_filters_section_without_a_trained_reference_gives_no_position_and_says_why():
    from unirep.backbones import create_backbone
    from unirep.inspect.filters import Filters

    backbone = create_backbone("random:resnet18", input_size=32, seed=1)
    result = Filters().run(_context(backbone, {"random-init": create_backbone("random:resnet18", input_size=32)}))
    assert result.numbers["first_layer"]["position"] is None and result.numbers["median_position"] is None
    assert result.numbers["first_layer"]["references"]["random-init"] > 0.7  # an untrained 7 x 7 stem: noise-like
    assert any("no trained reference" in note for note in result.notes)
