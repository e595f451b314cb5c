"""The audio task type: a card (classes, metric, split table, counts, the front-end's `spectrogram:` settings),
its clips, and the same seeded split machinery as the image tasks (`unirep.tasks.base`).

`split(name)` gives the front-end's images (`SpectrogramImages`, an ImageSet) so every image backbone, probe and
estimator works unchanged; `clips(name)` gives the waveforms (`ClipSet`) for backbones with
`modality = "waveform"`. Before either is handed out, the header of every clip of the three splits is read once:
an unreadable or empty file is refused there, naming it, before any feature is extracted, and what will be done to
the clips (mixed down, resampled, padded) is counted for the records (`input_summary`).

Adapters implement `load_clips()`; the card's `extra.spectrogram` holds the front-end's parameters.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass

import numpy as np

from unirep.audio.clips import ClipSet, ClipSpectrograms, SpectrogramImages
from unirep.audio.frontend import SpectrogramConfig
from unirep.audio.io import ClipHeader, read_header
from unirep.errors import DataError
from unirep.tasks.base import SPLITS, ImageSet, Task

MAX_LISTED = 5  # files named in one error line


@dataclass
class AudioExamples:
    """Every clip of a task (before splitting): stable ids, labels, files, and a sha256 of the data."""

    ids: list[str]
    labels: np.ndarray
    paths: list[str]
    data_sha256: str
    wheres: list[str] | None = None  # how errors name each clip (default: its path)


class AudioTask(Task):
    """A task over audio clips. Subclasses implement `load_clips` (and `official_split` when the data dictates
    one, e.g. by drum kit)."""

    kind = "audio"
    has_waveforms = True

    @functools.cached_property
    def spectrogram(self) -> SpectrogramConfig:
        return SpectrogramConfig.from_dict(self.card.extra.get("spectrogram"), f"task card {self.name}.yaml")

    def load_clips(self) -> AudioExamples:  # pragma: no cover - abstract
        raise NotImplementedError

    @functools.cached_property
    def clip_examples(self) -> AudioExamples:
        return self.load_clips()

    def load_examples(self) -> tuple[ImageSet, str]:
        found = self.clip_examples
        renderer = ClipSpectrograms(found.paths, self.spectrogram, found.wheres)
        return SpectrogramImages(found.ids, found.labels, renderer), found.data_sha256

    def split(self, name: str) -> SpectrogramImages:
        images = super().split(name)
        self._check_headers()
        return images

    def clips(self, name: str) -> ClipSet:
        """The waveforms of split `name` (ids and labels in manifest order, as `split(name)`)."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        _, _, indices = self._loaded
        self._check_headers()
        found = self.clip_examples
        return ClipSet(found.ids, found.labels, found.paths, found.wheres).subset(indices[name])

    @functools.cached_property
    def headers(self) -> dict[int, ClipHeader]:
        """Header of every clip in the three splits (by example index); refuses unreadable or empty files."""
        _, _, indices = self._loaded
        found = self.clip_examples
        wheres = found.wheres or found.paths
        headers, problems = {}, []
        for row in sorted({int(i) for s in SPLITS for i in indices[s]}):
            try:
                headers[row] = read_header(found.paths[row], wheres[row])
            except DataError as exc:
                problems.append(str(exc))
        if problems:
            raise DataError(f"task {self.name!r}: {len(problems)} bad audio file(s): {'; '.join(problems[:MAX_LISTED])}"
                            f"{' ...' if len(problems) > MAX_LISTED else ''}")
        config = self.spectrogram
        if config.short_clips == "refuse":
            short = [wheres[r] for r, h in headers.items() if h.seconds * config.sample_rate < config.win_length]
            if short:
                raise DataError(f"task {self.name!r}: {len(short)} clip(s) shorter than one window "
                                f"({config.win_length} samples at {config.sample_rate} Hz): "
                                f"{', '.join(short[:MAX_LISTED])}; remove them, or set spectrogram.short_clips: pad in "
                                "the task card")
        return headers

    def _check_headers(self) -> None:
        self.headers  # noqa: B018 - read once, for its checks

    def input_summary(self, sample_rate: int | None = None) -> dict:
        """What the clips of the three splits are in their files and what reading them does: counts of source
        sample rates and channel counts, how many are mixed down and resampled (to `sample_rate`, default the
        front-end's), and how many are padded or cropped to the front-end's clip length."""
        config = self.spectrogram
        rate = sample_rate or config.sample_rate
        headers = list(self.headers.values())
        summary = {
            "clips": len(headers),
            "source_sample_rates": _counts(h.sample_rate for h in headers),
            "source_channels": _counts(h.channels for h in headers),
            "mixed_down": sum(h.channels > 1 for h in headers),
            "resampled_to": rate,
            "resampled": sum(h.sample_rate != rate for h in headers),
        }
        if sample_rate is None:  # the front-end's images: clips are cut or padded to clip_seconds
            seconds = [h.seconds for h in headers]
            summary.update(clip_seconds=config.clip_seconds, padded=sum(s < config.clip_seconds for s in seconds),
                           cropped=sum(s > config.clip_seconds for s in seconds), pad=config.pad, crop=config.crop,
                           shorter_than_window=sum(s * config.sample_rate < config.win_length for s in seconds))
        return summary


def _counts(values) -> dict[str, int]:
    return {str(k): v for k, v in sorted(Counter(values).items())}
