"""Raw-feature baselines for the audio tasks, the floor a representation must beat (as raw-pixels is for images).

- `logmel-stats` (an image backbone): the mean and the standard deviation over time (image columns) of every row
  of the front-end image it is given, D = 2 x input_size (256 at 128 px). On a log-mel task a row is a mel band,
  so this is the classic "mean and std of each log-mel band" summary, made from exactly the image the CNNs see
  (the card's front-end, scaled to 0..1); on the MFCC task a row is (part of) a cepstral coefficient. It runs on
  any image task too, where it is just row statistics of the picture.
- `wave-logmel-stats` (a waveform backbone, `modality = "waveform"`): the same statistics of a 16-kHz, 128-band
  log-mel of the whole clip (dB floored at the clip's peak - 80), computed from the waveform, independent of the
  card's image size and clip length.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from unirep.audio.frontend import SpectrogramConfig, log_mel
from unirep.backbones import register_backbone
from unirep.backbones.base import Backbone, DataConfig
from unirep.backbones.timm_backbone import apply_data_overrides
from unirep.errors import DataError

LOGMEL_STATS_SIZE = 128


class LogMelStats(Backbone):
    """Row means and row standard deviations (over columns) of the grey image in 0..1: D = 2 * input_size."""

    def __init__(self, name: str, data_config: DataConfig):
        super().__init__(name, data_config, weights_id="none")
        self.num_features = 2 * data_config.input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.data_config.input_size
        if tuple(x.shape[1:]) != (3, size, size):
            raise DataError(f"backbone {self.name!r} expects images (B, 3, {size}, {size}), got {tuple(x.shape)}")
        grey = x.float().mean(dim=1)  # the three channels of a spectrogram image are equal
        return torch.cat([grey.mean(dim=2), grey.std(dim=2, correction=0)], dim=1)


@register_backbone("logmel-stats")
def create_logmel_stats(name: str, *, input_size: int | None = None,
                        data_overrides: Mapping[str, Any] | None = None) -> LogMelStats:
    """Band statistics of the front-end image at `input_size` (default 128, the audio cards' image size)."""
    base = DataConfig(input_size=LOGMEL_STATS_SIZE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                      interpolation="bilinear", crop_pct=1.0)  # pixels / 255: the dB scale of the image, in 0..1
    return LogMelStats(name, apply_data_overrides(name, base, input_size, data_overrides))


class WaveLogMelStats(Backbone):
    """Mean and std over time of each band of the clip's log-mel (dB, floored at peak - top_db): D = 2 * n_mels."""

    modality = "waveform"

    def __init__(self, name: str, config: SpectrogramConfig):
        super().__init__(name, DataConfig(), weights_id="none")
        self.config = config
        self.sample_rate = config.sample_rate
        self.num_features = 2 * config.n_mels

    def embed_clips(self, clips: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([self._embed(torch.as_tensor(clip, dtype=torch.float32)) for clip in clips])

    def _embed(self, clip: torch.Tensor) -> torch.Tensor:
        if clip.numel() < self.config.n_fft:  # reflect padding needs more than half a window: pad with silence
            clip = torch.nn.functional.pad(clip, (0, self.config.n_fft - clip.numel()))
        decibels = log_mel(clip, self.config)
        decibels = decibels.clamp(min=decibels.max() - self.config.top_db)
        return torch.cat([decibels.mean(dim=1), decibels.std(dim=1, correction=0)])

    def identity(self) -> dict:
        return {**super().identity(), "sample_rate": self.sample_rate, "frontend": self.config.to_dict()}


@register_backbone("wave-logmel-stats")
def create_wave_logmel_stats(name: str) -> WaveLogMelStats:
    """The band statistics of a 16-kHz 128-band log-mel of each whole clip, from the waveform."""
    return WaveLogMelStats(name, SpectrogramConfig(sample_rate=16000))
