"""Reading audio clips: any file soundfile (libsndfile) decodes - wav, ogg/vorbis, flac, aiff - as float32 mono at
a requested sample rate.

Mixing down (the mean of the channels) and resampling (scipy.signal.resample_poly: polyphase FIR, Kaiser window,
beta 5, at the rational ratio reduced by the gcd) happen here, once, and every clip says what was done to it
(`ClipHeader` / `ReadClip`): the audio tasks record these conversions next to their results. torchaudio is not
used at runtime (it is only the tests' reference).

Example:
    >>> clip = read_clip("/usr/share/tuxpaint/stamps/animals/mammals/cat_desc_fr.ogg", 16000)
    >>> clip.waveform.dtype, clip.source_rate, clip.resampled
    (dtype('float32'), 44100, True)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unirep.errors import DataError

AUDIO_SUFFIXES = (".wav", ".ogg", ".oga", ".flac", ".aif", ".aiff")
RESAMPLER = "scipy.signal.resample_poly(window=('kaiser', 5.0))"
MIXDOWN = "mean of channels"


def _soundfile():
    try:
        import soundfile
    except ImportError:  # pragma: no cover - soundfile is a core dependency of the [audio] extra
        raise DataError("reading audio needs soundfile: pip install 'unirep[audio]' (or pip install soundfile)"
                        ) from None
    return soundfile


@dataclass(frozen=True)
class ClipHeader:
    """What a file holds before conversion (read from its header, no decoding)."""

    path: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def read_header(path: str | Path, where: str | None = None) -> ClipHeader:
    """The header of `path`; DataError naming the file when it cannot be read or holds no samples."""
    sf = _soundfile()
    where = where or str(path)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / OSError for bad files
        raise DataError(f"cannot read audio file {where}: {_reason(exc)}; replace or remove it (wav, ogg, flac and "
                        "aiff are read)") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise DataError(f"audio file {where} is empty (0 samples); replace or remove it")
    return ClipHeader(str(path), int(info.samplerate), int(info.channels), int(info.frames))


@dataclass(frozen=True)
class ReadClip:
    """A decoded clip: float32 mono `waveform` at `sample_rate`, and what it was in the file."""

    waveform: np.ndarray
    sample_rate: int
    source_rate: int
    source_channels: int

    @property
    def resampled(self) -> bool:
        return self.source_rate != self.sample_rate

    @property
    def mixed_down(self) -> bool:
        return self.source_channels > 1


def read_clip(path: str | Path, sample_rate: int, where: str | None = None) -> ReadClip:
    """Decode `path` to float32 mono at `sample_rate` (mixed down and resampled when the file differs).

    Raises DataError naming the file (`where`, default the path) when it is unreadable, empty or not finite.
    """
    sf = _soundfile()
    where = where or str(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise DataError(f"cannot read audio file {where}: {_reason(exc)}; replace or remove it (wav, ogg, flac and "
                        "aiff are read)") from None
    if data.size == 0:
        raise DataError(f"audio file {where} is empty (0 samples); replace or remove it")
    if not np.isfinite(data).all():
        raise DataError(f"audio file {where} holds NaN or infinite samples; re-export it")
    mono = mix_down(data)
    return ReadClip(resample(mono, int(rate), sample_rate), sample_rate, int(rate), data.shape[1])


def mix_down(samples: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) float32: the mean of the channels (what a mono microphone between them
    would have recorded for correlated sources; no channel is preferred)."""
    return np.ascontiguousarray(samples.mean(axis=1, dtype=np.float64).astype(np.float32)
                                if samples.shape[1] > 1 else samples[:, 0])


def resample(waveform: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """`waveform` (frames,) from `source_rate` to `target_rate` Hz, float32; the identity when they are equal.

    Polyphase resampling at up/down = target/source reduced by their gcd (44.1 kHz -> 16 kHz: up 160, down 441):
    the anti-aliasing low-pass cuts at the lower Nyquist frequency, so nothing above target_rate / 2 folds back.
    Output length: ceil(frames * up / down).
    """
    if source_rate <= 0 or target_rate <= 0:
        raise DataError(f"sample rates must be positive, got {source_rate} -> {target_rate}")
    if source_rate == target_rate:
        return np.asarray(waveform, dtype=np.float32)
    from scipy.signal import resample_poly  # imported on first use: `import unirep.features` stays cheap

    divisor = math.gcd(source_rate, target_rate)
    up, down = target_rate // divisor, source_rate // divisor
    out = resample_poly(np.asarray(waveform, dtype=np.float64), up, down, window=_polyphase_filter(up, down))
    return out.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _polyphase_filter(up: int, down: int) -> np.ndarray:
    """The FIR filter resample_poly designs for (up, down) with its default Kaiser window (beta 5), made once:
    designing its 20 * max(up, down) + 1 taps took most of the time of resampling a 1-s clip."""
    from scipy.signal import firwin

    max_rate = max(up, down)
    half_length = 10 * max_rate
    return firwin(2 * half_length + 1, 1.0 / max_rate, window=("kaiser", 5.0))  # resample_poly scales it by up


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
