"""What audio tasks hand to feature extraction: a `ClipSet` (the waveforms, for backbones with
`modality = "waveform"`) and `SpectrogramImages` (an `ImageSet` of front-end images, for every image backbone).

Both describe their inputs (`input_description()`): that mapping goes into the feature-cache key, so changing a
front-end parameter or a waveform backbone's sample rate never reuses features made from other inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from unirep.audio.frontend import SpectrogramConfig, fit_length, to_grey
from unirep.audio.io import MIXDOWN, RESAMPLER, read_clip
from unirep.tasks.base import ImageSet


class GreyRenderer(Protocol):
    """Makes the uint8 (H, W) image of example `row` of a task (memoised: every backbone reads the same)."""

    def grey_batch(self, rows: np.ndarray) -> np.ndarray: ...

    def description(self) -> dict: ...

    def where(self, row: int) -> str: ...


class ClipSpectrograms:
    """Log-mel images of audio files, made by the front-end on first use and kept in memory (16 KB each at
    128 x 128), so a run over several image backbones decodes each clip once."""

    def __init__(self, paths: Sequence[str], config: SpectrogramConfig, wheres: Sequence[str] | None = None):
        self.paths = list(paths)
        self.config = config
        self._wheres = list(wheres) if wheres is not None else self.paths
        self._memo: dict[int, np.ndarray] = {}

    def where(self, row: int) -> str:
        return self._wheres[row]

    def grey_batch(self, rows: np.ndarray) -> np.ndarray:
        todo = [int(r) for r in dict.fromkeys(rows.tolist()) if int(r) not in self._memo]
        if todo:
            waves = torch.stack([
                fit_length(torch.from_numpy(read_clip(self.paths[r], self.config.sample_rate, self.where(r)).waveform),
                           self.config, self.where(r)) for r in todo])
            for row, grey in zip(todo, to_grey(waves, self.config).numpy(), strict=True):
                self._memo[row] = grey
        return np.stack([self._memo[int(r)] for r in rows])

    def description(self) -> dict:
        return {"kind": "log-mel image", "reader": {"resampler": RESAMPLER, "mixdown": MIXDOWN},
                **self.config.to_dict()}


class SpectrogramImages(ImageSet):
    """Labelled front-end images of one split: an ImageSet (PIL RGB per example, or whole uint8 batches through
    `stored_pixels`, which feature extraction prefers), so every image backbone, probe and estimator reads them.

    `whole_image`: feature extraction resizes these images to the backbone's input size without its centre crop
    (crop_pct 0.875 would cut the lowest and highest mel bands and the clip's ends, which are not background)."""

    whole_image = True

    def __init__(self, ids: Sequence[str], labels: np.ndarray, renderer: GreyRenderer, rows: np.ndarray | None = None):
        rows = np.arange(len(ids), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        super().__init__(ids, labels, lambda i: Image.fromarray(renderer.grey_batch(rows[i:i + 1])[0]),
                         lambda i: renderer.where(int(rows[i])))
        self.renderer = renderer
        self.rows = rows

    def stored_pixels(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        grey = self.renderer.grey_batch(self.rows[np.asarray(indices, dtype=np.int64)])
        return torch.from_numpy(grey)[:, None]  # (B, 1, H, W): extraction repeats it to 3 channels after resizing

    def subset(self, indices: Sequence[int] | np.ndarray) -> SpectrogramImages:
        indices = np.asarray(indices, dtype=np.int64)
        return SpectrogramImages([self.ids[i] for i in indices], self.labels[indices], self.renderer,
                                 self.rows[indices])

    def input_description(self) -> dict:
        return {**self.renderer.description(), "crop": "none (whole image resized to the input size)"}


class ClipSet:
    """Labelled clips of one split for waveform backbones: `clip(i)` is float32 mono at `sample_rate`, whole
    (any length; the backbone chunks or pads it as it needs)."""

    def __init__(self, ids: Sequence[str], labels: np.ndarray, paths: Sequence[str],
                 wheres: Sequence[str] | None = None, sample_rate: int | None = None):
        self.ids = list(ids)
        self.labels = np.asarray(labels)
        self.paths = list(paths)
        self.wheres = list(wheres) if wheres is not None else self.paths
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.ids)

    def clip(self, index: int, sample_rate: int | None = None) -> torch.Tensor:
        rate = sample_rate or self.sample_rate
        if rate is None:
            raise ValueError("ClipSet.clip needs a sample rate (or a set made with at_rate)")
        return torch.from_numpy(read_clip(self.paths[index], rate, self.wheres[index]).waveform)

    def at_rate(self, sample_rate: int) -> ClipSet:
        return ClipSet(self.ids, self.labels, self.paths, self.wheres, int(sample_rate))

    def subset(self, indices: Sequence[int] | np.ndarray) -> ClipSet:
        indices = np.asarray(indices, dtype=np.int64)
        return ClipSet([self.ids[i] for i in indices], self.labels[indices], [self.paths[i] for i in indices],
                       [self.wheres[i] for i in indices], self.sample_rate)

    def input_description(self) -> dict:
        return {"kind": "waveform", "sample_rate": self.sample_rate, "length": "whole clip",
                "reader": {"resampler": RESAMPLER, "mixdown": MIXDOWN}}
