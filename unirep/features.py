"""Feature extraction and its content-addressed cache.

One frozen forward pass per (backbone, task split) feeds every probe and estimator. The cache key hashes
everything that changes the numbers: the backbone's identity (name, weights hash, layer, data config), the
task's split manifest digest, the split, the numeric precision. A second run finds the file and skips the
forward pass; entries are written atomically, so a killed extraction never leaves a corrupt entry.

In a distributed run (unirep.distributed) global rank 0 decides hit or miss and tells the others; on a miss each
rank runs the forward pass over its contiguous part of the split, the parts are gathered back in manifest order,
and rank 0 alone writes the entry - the same key and file as a one-process run, so either can use the other's.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torchvision.transforms.v2 as T
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from unirep.backbones.base import Backbone, DataConfig
from unirep.config import PRECISIONS
from unirep.distributed import World
from unirep.errors import ConfigError, OutputError
from unirep.faults import fault_point
from unirep.fileio import atomic_save_npz, sha256_json
from unirep.numerics import check_finite
from unirep.runtime import resolve_device
from unirep.tasks.base import ImageSet, SplitManifest

if TYPE_CHECKING:
    from unirep.audio.clips import ClipSet

CACHE_FORMAT = 1


@dataclass(frozen=True)
class ExtractionSettings:
    """How the forward pass runs. `precision`: fp32, bf16 (autocast; CPU or GPU) or fp16 (autocast, GPU AMP).
    `channels_last` (default, as in `unirep eval`) helps CPU convolutions: 1.85x MobileNetV2, 1.3x
    EfficientNet-Lite0 at 64 px in fp32 on 2 cores."""

    batch_size: int = 128
    num_workers: int = 0
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = True

    def __post_init__(self):
        # Checked when the settings are made, so a run refuses them before any work, not at its first batch.
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.precision == "fp16" and self.resolved_device().type == "cpu":
            raise ConfigError("precision=fp16 needs a GPU (autocast float16 on CPU is not supported); use "
                              "precision=bf16 on CPU")
        if self.batch_size < 1 or self.num_workers < 0:
            raise ConfigError(f"batch_size must be >= 1 and num_workers >= 0, got {self.batch_size} and "
                              f"{self.num_workers}")

    def resolved_device(self) -> torch.device:
        return resolve_device(self.device)

    def autocast(self, device: torch.device):
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.precision == "fp32":
            return nullcontext()
        if self.precision == "fp16" and device.type == "cpu":
            raise ConfigError("precision=fp16 needs a GPU; use precision=bf16 on CPU")
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class ExtractedSplit:
    """Features (N, D) float32, labels, and (when the backbone has a source head and they were asked for)
    source logits (N, K) for LEEP/NCE."""

    features: np.ndarray
    labels: np.ndarray
    source_logits: np.ndarray | None = None
    seconds: float = 0.0
    cached: bool = False
    images_per_rank: list[int] | None = None  # images each process ran through the backbone (None: from the cache)


class _ImageTensors(Dataset):
    """ImageSet -> uint8 (3, H, W) tensors at their stored size; resize + crop happen per batch.

    DataLoader fetches a batch through `__getitems__`: an array-backed set hands over its stored pixels as one
    (B, C, H, W) tensor, skipping a PIL image and a conversion per example (0.07 ms of the ~2 ms an image
    spends in MobileNetV2 at 64 px); other sets are read image by image."""

    def __init__(self, images: ImageSet):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        image, _ = self.images[index]
        return T.functional.pil_to_tensor(image)

    def __getitems__(self, indices: list[int]) -> torch.Tensor | list[torch.Tensor]:
        stored = self.images.stored_pixels(indices)
        return stored if stored is not None else [self[index] for index in indices]


class _ResizeCropCollate:
    """Collates uint8 images into one (B, 3, size, size) batch. Why batched: most tasks store equal-sized
    images, and one resize call over the stacked batch gives identical pixels at a fraction of the cost of B
    per-image calls (Fashion-MNIST to 64 px: 0.18 ms per image including reading it, against 0.48 ms, next to
    ~2 ms for MobileNetV2's forward); mixed sizes are resized one by one. A stored batch of grey pixels
    (B, 1, H, W) is resized as one channel and repeated to three after, the same pixels as resizing the RGB
    conversion (tested). A class, not a closure, so DataLoader workers can pickle it."""

    def __init__(self, resize_crop):
        self.resize_crop = resize_crop

    def __call__(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            resized = self.resize_crop(images)
            return resized.expand(-1, 3, -1, -1) if resized.shape[1] == 1 else resized
        if all(image.shape == images[0].shape for image in images):
            return self.resize_crop(torch.stack(images))
        return torch.stack([self.resize_crop(image) for image in images])


def image_batches(images: ImageSet, data_config: DataConfig, batch_size: int, num_workers: int = 0) -> DataLoader:
    """uint8 (B, 3, input_size, input_size) batches of `images`, resized and centre-cropped for `data_config`,
    in order; a set marked `whole_image` (spectrograms: their edge rows are the lowest and highest bands) is resized
    whole, without the crop. Shared by feature extraction, source-training / fine-tuning data caching and the
    sealed test split, so all of them see the same pixels."""
    if getattr(images, "whole_image", False):  # duck-typed sets (a DetectionSet, a custom dataset) have none
        data_config = data_config.with_overrides(crop_pct=1.0)
    return DataLoader(
        _ImageTensors(images),
        batch_size=batch_size,
        collate_fn=_ResizeCropCollate(data_config.resize_crop()),
        num_workers=num_workers,
        persistent_workers=False,
    )


def extract_features(
    backbone: Backbone,
    images: ImageSet,
    settings: ExtractionSettings = ExtractionSettings(),
    with_source_logits: bool = False,
    description: str = "extract",
) -> ExtractedSplit:
    """Run `backbone` over `images` (eval mode, no grad) and return pooled features as float32.

    Example:
        >>> split = extract_features(create_backbone("raw-pixels"), create_task("sklearn-digits").split("val"))
        >>> split.features.shape
    """
    start = time.perf_counter()
    device = settings.resolved_device()
    # Moved and converted outside inference mode: parameters converted inside it become inference tensors, which
    # a caller that trains this module afterwards (fine-tuning's LP-FT head fit, then its fine-tune) cannot train.
    backbone.eval().to(device)
    if settings.channels_last:
        backbone.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        if is_waveform_backbone(backbone):
            return _extract_clips(backbone, images, settings, with_source_logits and backbone.has_source_head,
                                  description, start)
        return _extract(backbone, images, settings, device, with_source_logits and backbone.has_source_head,
                        description, start)


def is_waveform_backbone(backbone: Backbone) -> bool:
    """True for backbones that read clips (`modality = "waveform"`, e.g. BirdNET) instead of images."""
    return getattr(backbone, "modality", "image") == "waveform"


def backbone_inputs(task, backbone: Backbone, split: str) -> ImageSet | ClipSet:
    """What `backbone` reads of `task`'s `split`: the task's images, or - for a waveform backbone on an audio task -
    its clips at the backbone's sample rate. A waveform backbone on a task without waveforms is refused in one line."""
    if not is_waveform_backbone(backbone):
        return task.split(split)
    if getattr(task, "kind", "image") != "audio":
        raise ConfigError(f"backbone {backbone.name!r} reads audio waveforms, but task {task.name!r} is an image task: "
                          "evaluate it on an audio task (unirep list tasks --suite audio), or use an image backbone")
    return task.clips(split).at_rate(backbone.sample_rate)  # the MFCC task refuses here: it has no waveforms


def _extract_clips(backbone: Backbone, clips: ClipSet, settings: ExtractionSettings, want_logits: bool,
                   description: str, start: float) -> ExtractedSplit:
    """Features of a waveform backbone: batches of clips (float32 mono at backbone.sample_rate, any length) through
    `embed_clips` / `embed_clips_with_source_logits`; the backbone runs them where it runs (e.g. a TFLite
    interpreter on the CPU), so `settings.device` and the precision do not apply."""
    features, logits = [], []
    batches = range(0, len(clips), settings.batch_size)
    for first in tqdm(batches, desc=description, unit="batch", leave=False, disable=_quiet()):
        batch = [clips.clip(i) for i in range(first, min(first + settings.batch_size, len(clips)))]
        if want_logits:
            feats, source_logits = backbone.embed_clips_with_source_logits(batch)
            logits.append(torch.as_tensor(source_logits).float().cpu())
        else:
            feats = backbone.embed_clips(batch)
        features.append(torch.as_tensor(feats).float().cpu())
        fault_point("extract-batch")
    out = torch.cat(features).numpy() if features else np.zeros((0, backbone.num_features), np.float32)
    check_finite(out, f"features of {backbone.name} ({description})", hint="nothing was cached; check the model file")
    return ExtractedSplit(features=out, labels=np.asarray(clips.labels),
                          source_logits=torch.cat(logits).numpy() if want_logits else None,
                          seconds=time.perf_counter() - start, images_per_rank=[len(out)])


def _extract(backbone: Backbone, images: ImageSet, settings: ExtractionSettings, device: torch.device,
             want_logits: bool, description: str, start: float) -> ExtractedSplit:
    loader = image_batches(images, backbone.data_config, settings.batch_size, settings.num_workers)
    features, logits = [], []
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    for batch in tqdm(loader, desc=description, unit="batch", leave=False, disable=_quiet()):
        batch = backbone.data_config.normalize_batch(batch.to(device, non_blocking=True), memory_format)
        with settings.autocast(device):
            if want_logits:
                feats, source_logits = backbone.forward_with_source_logits(batch)
                logits.append(source_logits.float().cpu())
            else:
                feats = backbone(batch)
        features.append(feats.float().cpu())
        fault_point("extract-batch")
    out = torch.cat(features).numpy() if features else np.zeros((0, backbone.num_features), np.float32)
    check_finite(out, f"features of {backbone.name} ({description})",
                 hint="nothing was cached. Try precision=fp32, or check the weights")
    return ExtractedSplit(
        features=out,
        labels=np.asarray(images.labels),
        source_logits=torch.cat(logits).numpy() if want_logits else None,
        seconds=time.perf_counter() - start,
        images_per_rank=[len(out)],
    )


def extract_sharded(backbone: Backbone, images: ImageSet, settings: ExtractionSettings, world: World,
                    with_source_logits: bool = False, description: str = "extract") -> ExtractedSplit:
    """`extract_features` with the work shared by the ranks of `world` (every rank calls it): each runs its
    contiguous part of `images`, and every rank gets the whole split back in `images`' order, each row once.

    Example:
        >>> split = extract_sharded(backbone, task.split("train"), settings, world)   # world.size ranks, 1/size each
    """
    if not world.distributed:
        return extract_features(backbone, images, settings, with_source_logits, description)
    if len(images) < world.size:  # a rank would get no image (and no tensor to size the gather by): not worth it
        return world.on_zero(lambda: extract_features(backbone, images, settings, with_source_logits, description))
    start = time.perf_counter()
    part = images.subset(np.asarray(world.shard(len(images)), dtype=np.int64))
    # `each` only shares whether every rank's part succeeded (each value is None): the features travel once, below.
    done: list[ExtractedSplit] = []
    world.each(lambda: done.append(extract_features(backbone, part, settings, with_source_logits,
                                                    f"{description} [rank {world.rank}]")))
    mine = done[0]
    features = world.gather_rows(mine.features)
    logits = world.gather_rows(mine.source_logits) if mine.source_logits is not None else None
    return ExtractedSplit(features, np.asarray(images.labels), logits, time.perf_counter() - start,
                          images_per_rank=world.gather(len(mine.features)))


def _entry_problem(found: ExtractedSplit, key: str, stored_key: str, labels: np.ndarray | None) -> str | None:
    """Why a readable cache entry cannot be the features its key names (None: it can)."""
    features = found.features
    if stored_key != key:
        return f"stored under another key ({stored_key[:12]}...)"
    if features.ndim != 2 or len(features) != len(found.labels):
        return f"inconsistent ({features.shape} features for {len(found.labels)} labels)"
    if labels is not None and not np.array_equal(found.labels, labels):
        return f"for other examples ({len(found.labels)} labels, the split has {len(labels)} that differ)"
    if found.source_logits is not None and len(found.source_logits) != len(features):
        return f"inconsistent ({len(found.source_logits)} rows of source logits for {len(features)} features)"
    if not np.isfinite(features).all():
        return "holding NaN/Inf features"
    return None


def _quiet() -> bool:
    return os.environ.get("UNIREP_QUIET", "") == "1"


class FeatureCache:
    """Content-addressed store of extracted splits under `root` (<root>/<key[:2]>/<key>.npz).

    Example:
        >>> cache = FeatureCache("~/.cache/unirep/features")
        >>> split = cache.get_or_extract(backbone, task.manifest, "train", task.split("train"), settings)
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        existing = next(p for p in (self.root, *self.root.parents) if p.exists())
        if not existing.is_dir():
            raise OutputError(f"feature cache directory {str(self.root)!r} cannot be created: {str(existing)!r} is a "
                              "file; choose another with --cache-dir (or cache_dir=...)")

    @staticmethod
    def key(backbone_identity: dict, manifest: SplitManifest, split: str, settings: ExtractionSettings,
            inputs: dict | None = None) -> str:
        # Batch size, device and workers do not change the numbers; precision and memory format may. `inputs`
        # describes inputs a task makes from its data (an audio task's front-end or clip reading); None (image tasks)
        # leaves their keys as they were.
        numerics = {"precision": settings.precision, "channels_last": settings.channels_last}
        described = {} if inputs is None else {"inputs": inputs}
        return sha256_json({"format": CACHE_FORMAT, "backbone": backbone_identity, "manifest": manifest.digest,
                            "split": split, "numerics": numerics, **described})

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def load(self, key: str, need_logits: bool, labels: np.ndarray | None = None) -> ExtractedSplit | None:
        """The entry `key`, or None: absent, without the source logits asked for, or damaged. A damaged entry
        (truncated, bytes flipped, another split's arrays under this key, labels that are not `labels`) is named on
        stderr and never trusted: the caller extracts again and replaces it."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            with np.load(path) as data:  # reading a whole member checks its CRC
                if need_logits and "source_logits" not in data:
                    return None
                found = ExtractedSplit(
                    features=data["features"],
                    labels=data["labels"],
                    source_logits=data["source_logits"] if "source_logits" in data else None,
                    seconds=float(data["seconds"]),
                    cached=True,
                )
                stored_key = str(data["key"]) if "key" in data else key  # entries written before keys were stored
        except Exception as exc:  # zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError...: all mean damaged
            problem = f"unreadable ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''})"
        else:
            problem = _entry_problem(found, key, stored_key, labels)
        if problem is None:
            return found
        print(f"unirep: feature cache entry {path} is {problem}; extracting again", file=sys.stderr)
        return None

    def save(self, key: str, split: ExtractedSplit, meta: dict) -> None:
        arrays = {"features": split.features, "labels": split.labels, "seconds": np.float64(split.seconds),
                  "meta": np.array(sha256_json(meta)), "key": np.array(key)}
        if split.source_logits is not None:
            arrays["source_logits"] = split.source_logits
        atomic_save_npz(self.path(key), **arrays)

    def get_or_extract(
        self,
        backbone: Backbone,
        manifest: SplitManifest,
        split: str,
        images: ImageSet | ClipSet,
        settings: ExtractionSettings,
        with_source_logits: bool = False,
        world: World | None = None,
    ) -> ExtractedSplit:
        """The cached split if present, else extract it and store it. With a distributed `world` every rank calls
        this: rank 0 reads the cache and sends the entry to the others, or they all extract a part each (see the
        module docstring) and rank 0 stores the gathered split."""
        world = world or World()
        identity = backbone.identity()
        describe = getattr(images, "input_description", None)
        inputs = describe() if describe is not None else None
        key = self.key(identity, manifest, split, settings, inputs)
        found = world.on_zero(lambda: self.load(key, need_logits=with_source_logits and backbone.has_source_head,
                                                labels=np.asarray(images.labels)))
        if found is not None:
            return found
        extracted = extract_sharded(backbone, images, settings, world, with_source_logits,
                                    description=f"{backbone.name}/{manifest.task}/{split}")
        if world.is_zero:
            self.save(key, extracted, {"backbone": identity, "manifest": manifest.summary(), "split": split,
                                       "settings": asdict(settings), **({"inputs": inputs} if inputs else {})})
        if world.distributed and world.is_zero:
            print(f"unirep: extracted {backbone.name}/{manifest.task}/{split} on {world.size} processes: "
                  f"{' + '.join(map(str, extracted.images_per_rank))} images", file=sys.stderr)
        return extracted
