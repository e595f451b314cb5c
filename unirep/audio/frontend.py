"""The spectrogram front-end: a clip -> a log-mel image any unirep image backbone takes.

Plain torch (`torch.stft` and a triangular mel filterbank written here, HTK mel scale, no area normalisation),
the same definition as torchaudio's `MelSpectrogram(mel_scale="htk", norm=None)` + `AmplitudeToDB("power")`
(tested against it on real clips). Steps, for a clip at `sample_rate`:

1. length: the clip is cropped to `clip_seconds` (from its start, or its centre) or padded to it (`pad`: zeros
   after the clip, or the clip repeated); a clip shorter than one window (`win_length` samples) is padded the same
   way or refused (`short_clips`), so a result never rests on a window of mostly padding without saying so.
2. power spectrogram: periodic Hann window of `win_length`, `n_fft`-point FFT, hop `hop_length`, frames centred
   (reflect padding); power = |X|^2.
3. mel: `n_mels` triangles between `f_min` and `f_max` on the HTK scale (mel = 2595 log10(1 + f / 700)).
4. decibels: 10 log10(max(mel, 1e-10)), floored at the clip's peak minus `top_db` (per-clip normalisation: the
   loudest bin of each clip is white; a silent clip is black).
5. image: the dB map scaled from [peak - top_db, peak] to 0..255, **frequency on the vertical axis with the low
   frequencies at the bottom** (row 0 = the highest mel band) and time left to right; resized (bilinear,
   antialiased) to `image_height` x `image_width`, the grey repeated into 3 channels.

The image size matters for what comes after: a stride-32 CNN over a 128-px-high image leaves 4 frequency rows, a
stride-16 stage 8; `image_height` = `n_mels` = 128 keeps one mel band per pixel row.

Example:
    >>> config = SpectrogramConfig(sample_rate=16000, clip_seconds=2.0)
    >>> image = to_image(torch.randn(16000), config)      # uint8 (3, 128, 128)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from unirep.errors import ConfigError, DataError

AMIN = 1e-10  # power floor before the logarithm (torchaudio's AmplitudeToDB default)
CROPS = ("start", "center")
PADS = ("zeros", "repeat")
SHORT_CLIPS = ("pad", "refuse")
MEL_SCALES = ("htk",)
FRONTEND_VERSION = 1  # bump when the image a config gives changes: it is part of every feature-cache key


@dataclass(frozen=True)
class SpectrogramConfig:
    """Every parameter of the log-mel image; `to_dict()` goes into the feature-cache key and the records.

    Defaults: 16 kHz (speech), 25 ms Hann windows every 10 ms (the usual speech front-end), each zero-padded to a
    1024-point FFT (15.6 Hz bins: with 512 points the lowest of 128 HTK bands over 20 Hz-8 kHz falls between two
    bins and stays empty), 128 mel bands over 20 Hz-8 kHz, 2-s clips, a 128 x 128 image (one band per row; the
    201 frames resampled to 128 columns).
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 128
    f_min: float = 20.0
    f_max: float = 8000.0
    mel_scale: str = "htk"
    top_db: float = 80.0
    clip_seconds: float = 2.0
    crop: str = "start"
    pad: str = "zeros"
    short_clips: str = "pad"
    image_height: int = 128
    image_width: int = 128

    def __post_init__(self):
        problems = []
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "image_height", "image_width"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.win_length > self.n_fft:
            problems.append(f"win_length ({self.win_length}) must not exceed n_fft ({self.n_fft})")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            problems.append(f"need 0 <= f_min < f_max <= sample_rate / 2 = {self.sample_rate / 2:g}, got "
                            f"f_min={self.f_min:g}, f_max={self.f_max:g}")
        if self.clip_seconds * self.sample_rate < self.win_length:
            problems.append(f"clip_seconds ({self.clip_seconds:g}) is shorter than one window ({self.win_length} "
                            "samples)")
        if self.top_db <= 0:
            problems.append(f"top_db must be positive, got {self.top_db}")
        for name, allowed in (("crop", CROPS), ("pad", PADS), ("short_clips", SHORT_CLIPS),
                              ("mel_scale", MEL_SCALES)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not problems:
            bank = mel_filterbank(self.n_fft // 2 + 1, float(self.f_min), float(self.f_max), self.n_mels,
                                  self.sample_rate)
            empty = int((bank.sum(0) == 0).sum())
            if empty:  # a band no FFT bin reaches would be a constant black row of every image
                problems.append(f"{empty} of the {self.n_mels} mel bands fall between two FFT bins "
                                f"({self.sample_rate / self.n_fft:.1f} Hz apart) and stay empty: raise n_fft, raise "
                                "f_min or lower n_mels")
        if problems:
            raise ConfigError(f"spectrogram settings: {problems[0]}")

    @classmethod
    def from_dict(cls, raw: Mapping | None, where: str) -> SpectrogramConfig:
        """From a card's `spectrogram:` mapping (missing keys take the defaults); unknown keys are refused."""
        raw = dict(raw or {})
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f"{where}: unknown spectrogram setting(s) {unknown}; allowed: {sorted(known)}")
        try:
            kinds = {f.name: type(f.default) for f in fields(cls)}
            values = {k: kinds[k](v) for k, v in raw.items()}
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: spectrogram setting has the wrong type ({exc})") from None
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        return self.clip_samples // self.hop_length + 1

    def to_dict(self) -> dict:
        return {"frontend_version": FRONTEND_VERSION, **asdict(self)}


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """(n_freqs, n_mels) float32 triangles: band m rises from mel point m to m + 1 and falls to m + 2, the
    n_mels + 2 points equally spaced in HTK mel between f_min and f_max; FFT bins at linspace(0, sr / 2)."""
    bins = np.linspace(0.0, sample_rate / 2.0, n_freqs)
    points = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = points[:-2, None], points[1:-1, None], points[2:, None]
    rising = (bins[None] - lower) / (centre - lower)
    falling = (upper - bins[None]) / (upper - centre)
    return torch.from_numpy(np.maximum(0.0, np.minimum(rising, falling)).T.astype(np.float32))


def fit_length(waveform: torch.Tensor, config: SpectrogramConfig, where: str = "clip") -> torch.Tensor:
    """(samples,) -> (config.clip_samples,): cropped (start or centre) or padded (zeros or repeats)."""
    n, want = waveform.shape[-1], config.clip_samples
    if n == 0:
        raise DataError(f"{where} is empty (0 samples); replace or remove it")
    if n < config.win_length and config.short_clips == "refuse":
        raise DataError(f"{where} has {n} samples at {config.sample_rate} Hz, shorter than one window "
                        f"({config.win_length}); remove it, or set spectrogram.short_clips: pad in the task card")
    if n >= want:
        start = 0 if config.crop == "start" else (n - want) // 2
        return waveform[..., start:start + want]
    if config.pad == "repeat":
        return waveform.repeat(math.ceil(want / n))[:want]
    return F.pad(waveform, (0, want - n))


def log_mel(waveforms: torch.Tensor, config: SpectrogramConfig) -> torch.Tensor:
    """(..., samples) float32 -> (..., n_mels, frames) power in dB (10 log10(max(mel, 1e-10))), not floored."""
    window = torch.hann_window(config.win_length, periodic=True, dtype=waveforms.dtype)
    spectrum = torch.stft(waveforms.reshape(-1, waveforms.shape[-1]), n_fft=config.n_fft,
                          hop_length=config.hop_length, win_length=config.win_length, window=window, center=True,
                          pad_mode="reflect", return_complex=True)
    power = spectrum.real.square() + spectrum.imag.square()
    bank = mel_filterbank(config.n_fft // 2 + 1, float(config.f_min), float(config.f_max), config.n_mels,
                          config.sample_rate)
    mel = torch.matmul(power.transpose(-1, -2), bank).transpose(-1, -2)
    decibels = 10.0 * torch.log10(mel.clamp(min=AMIN))
    return decibels.reshape(*waveforms.shape[:-1], config.n_mels, decibels.shape[-1])


def to_grey(waveforms: torch.Tensor, config: SpectrogramConfig) -> torch.Tensor:
    """(B, clip_samples) float32 clips (already `fit_length`ed) -> uint8 (B, image_height, image_width)."""
    decibels = log_mel(waveforms, config)
    peak = decibels.amax(dim=(-2, -1), keepdim=True)
    scaled = ((decibels - (peak - config.top_db)) / config.top_db).clamp(0.0, 1.0)
    scaled = torch.where(peak <= 10.0 * math.log10(AMIN), torch.zeros_like(scaled), scaled)  # silence is black
    scaled = scaled.flip(-2)  # row 0 = the highest band: low frequencies at the bottom of the image
    size = (config.image_height, config.image_width)
    if tuple(scaled.shape[-2:]) != size:
        scaled = F.interpolate(scaled[:, None], size=size, mode="bilinear", align_corners=False, antialias=True)[:, 0]
    return (scaled * 255.0).round().clamp(0, 255).to(torch.uint8)


def to_image(waveform: torch.Tensor, config: SpectrogramConfig, where: str = "clip") -> torch.Tensor:
    """One clip (samples,) float32 mono at config.sample_rate, any length -> uint8 (3, image_height, image_width)."""
    grey = to_grey(fit_length(torch.as_tensor(waveform, dtype=torch.float32), config, where)[None], config)[0]
    return grey[None].expand(3, -1, -1).contiguous()
