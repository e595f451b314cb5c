"""The log-mel front-end against torchaudio (MelSpectrogram + AmplitudeToDB, installed as an independent
reference) on real clips, its image orientation, its length policies and its refusals; the resampler against an
analytic tone and scipy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from unirep.audio.frontend import SpectrogramConfig, fit_length, log_mel, mel_filterbank, to_grey, to_image
from unirep.audio.io import read_clip, resample
from unirep.errors import ConfigError, DataError

torchaudio = pytest.importorskip("torchaudio")
DRUMKITS = Path("/usr/share/hydrogen/data/drumkits")

SPEECH = SpectrogramConfig()  # the tuxpaint-language card's settings are the defaults
DRUMS = SpectrogramConfig(sample_rate=22050, n_fft=2048, win_length=1024, hop_length=256, f_max=11025.0,
                          clip_seconds=1.0)


def reference_db(waveform: torch.Tensor, config: SpectrogramConfig) -> torch.Tensor:
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=config.sample_rate, n_fft=config.n_fft, win_length=config.win_length,
        hop_length=config.hop_length, f_min=config.f_min, f_max=config.f_max, n_mels=config.n_mels, power=2.0,
        norm=None, mel_scale="htk", center=True, pad_mode="reflect")(waveform)
    return torchaudio.transforms.AmplitudeToDB(stype="power", top_db=None)(mel)


def real_clips(config: SpectrogramConfig, tuxpaint_clips) -> list[torch.Tensor]:
    files = [*tuxpaint_clips("fr", 2), *tuxpaint_clips("el", 1)]
    if config is DRUMS:
        files = sorted((DRUMKITS / "ForzeeStereo").glob("*.wav"))[:3] or pytest.skip("hydrogen-drumkits missing")
    return [fit_length(torch.from_numpy(read_clip(f, config.sample_rate).waveform), config) for f in files]


@pytest.mark.parametrize("config", [SPEECH, DRUMS], ids=["speech-16k", "drums-22k"])
def test_log_mel_equals_torchaudio_on_real_clips(config, tuxpaint_clips):
    for clip in real_clips(config, tuxpaint_clips):
        ours, theirs = log_mel(clip, config), reference_db(clip, config)
        assert ours.shape == theirs.shape == (config.n_mels, config.frames)
        # What the image shows: the top 80 dB of each clip. float32 FFTs summed in another order differ by far
        # less than 0.01 dB there; a wrong window, hop, filterbank or scale differs by whole decibels.
        shown = theirs > theirs.max() - config.top_db  # the zero padding after a short clip is not shown
        assert shown.float().mean() > 0.25
        assert (ours - theirs)[shown].abs().max() < 0.01


def test_filterbank_equals_torchaudio():
    ours = mel_filterbank(513, 20.0, 8000.0, 128, 16000)
    theirs = torchaudio.functional.melscale_fbanks(513, 20.0, 8000.0, 128, 16000, norm=None, mel_scale="htk")
    assert torch.allclose(ours, theirs, atol=1e-4)  # torchaudio builds it in float32 (1.3e-5 apart here)
    assert (ours - theirs).abs().sum() < 0.01 * theirs.sum()


def test_image_low_frequencies_at_the_bottom():
    rate, t = 16000, torch.arange(32000) / 16000
    low = to_image(torch.sin(2 * np.pi * 200 * t), SPEECH).float()
    high = to_image(torch.sin(2 * np.pi * 6000 * t), SPEECH).float()
    assert low.shape == (3, 128, 128) and torch.equal(low[0], low[2])
    # Row of the brightest band: 200 Hz near the bottom, 6 kHz near the top.
    assert low[0].mean(1).argmax() > 100 and high[0].mean(1).argmax() < 30
    assert rate == SPEECH.sample_rate


def test_silence_is_black_and_loudest_bin_white(tuxpaint_clips):
    assert int(to_grey(torch.zeros(1, SPEECH.clip_samples), SPEECH).max()) == 0
    clip = real_clips(SPEECH, tuxpaint_clips)[0]
    unresized = SpectrogramConfig(image_width=SPEECH.frames)  # 128 bands x 201 frames: no resize blurs the peak
    grey = to_grey(clip[None], unresized)[0]
    assert int(grey.max()) == 255
    decibels = log_mel(clip, SPEECH).flip(0)
    assert int(grey.flatten()[decibels.argmax()]) == 255 and (grey == 0).any()


def test_length_policies():
    clip = torch.arange(1, 11, dtype=torch.float32)
    config = SpectrogramConfig(sample_rate=10, n_fft=4, win_length=4, hop_length=1, n_mels=2, f_min=0.0,
                               f_max=5.0, clip_seconds=2.0)
    assert fit_length(clip, config).tolist() == [*range(1, 11), *[0] * 10]
    repeat = SpectrogramConfig(**{**config.__dict__, "pad": "repeat"})
    assert fit_length(clip[:3], repeat).tolist() == [1, 2, 3] * 6 + [1, 2]
    centre = SpectrogramConfig(**{**config.__dict__, "clip_seconds": 0.5, "crop": "center"})
    assert fit_length(clip, centre).tolist() == [3, 4, 5, 6, 7]
    refuse = SpectrogramConfig(**{**config.__dict__, "short_clips": "refuse"})
    with pytest.raises(DataError, match="shorter than one window"):
        fit_length(clip[:3], refuse, "bird.wav")
    assert fit_length(clip[:3], config).shape == (20,)  # padded, as the card says


@pytest.mark.parametrize(("change", "message"), [
    ({"n_fft": 512, "f_min": 0.0}, "stay empty"),
    ({"f_max": 9000.0}, "f_max <= sample_rate / 2"),
    ({"win_length": 2048}, "must not exceed n_fft"),
    ({"pad": "mirror"}, "pad must be one of"),
])
def test_config_refusals(change, message):
    with pytest.raises(ConfigError, match=message):
        SpectrogramConfig(**change)
    with pytest.raises(ConfigError, match="unknown spectrogram setting"):
        SpectrogramConfig.from_dict({"nfft": 512}, "card.yaml")


def test_resampler_matches_an_analytic_tone_and_scipy():
    from scipy.signal import resample_poly

    source_rate, target_rate, hz = 44100, 16000, 440.0
    tone = np.sin(2 * np.pi * hz * np.arange(44100) / source_rate).astype(np.float32)
    out = resample(tone, source_rate, target_rate)
    assert out.dtype == np.float32 and len(out) == 16000
    expected = np.sin(2 * np.pi * hz * np.arange(16000) / target_rate)
    assert np.abs(out[200:-200] - expected[200:-200]).max() < 2e-3  # the filter's edges aside
    assert np.allclose(out, resample_poly(tone.astype(np.float64), 160, 441), atol=1e-6)
    # A tone above the new Nyquist frequency is filtered out, not folded back.
    alias = resample(np.sin(2 * np.pi * 10000 * np.arange(44100) / source_rate).astype(np.float32), 44100, 16000)
    assert np.abs(alias[200:-200]).max() < 0.01
    assert resample(tone, 44100, 44100) is not None and np.array_equal(resample(tone, 44100, 44100), tone)


def test_read_clip_mixes_down_and_records(tmp_path):
    import soundfile as sf

    left = np.sin(np.linspace(0, 100, 8000)).astype(np.float32)
    sf.write(tmp_path / "stereo.wav", np.stack([left, 0.5 * left], axis=1), 8000, subtype="FLOAT")
    clip = read_clip(tmp_path / "stereo.wav", 8000)
    assert clip.mixed_down and not clip.resampled and clip.source_channels == 2
    assert np.allclose(clip.waveform, 0.75 * left, atol=1e-6)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(DataError, match=r"cannot read audio file .*empty.wav"):
        read_clip(tmp_path / "empty.wav", 8000)
    sf.write(tmp_path / "silent.wav", np.zeros((0, 1), np.float32), 8000)
    with pytest.raises(DataError, match=r"silent.wav is empty"):
        read_clip(tmp_path / "silent.wav", 8000)
