"""Is data loading (JPEG decode + resize) what limits extraction? Loader images/s vs the bare forward's, and the
whole pipeline's, on JPEG files of a realistic size (500 x 375, as in ImageNet / Pascal photos).

The JPEGs are written once (under --jpeg-dir, reused afterwards): seeded 500 x 375 crops, rescaled and flipped,
of the real photographs scikit-image ships (astronaut, coffee, chelsea, rocket, ...), quality 90, so decode cost
and file sizes are those of photos, not of noise or of 28 x 28 arrays. Three figures per setting, in the same run:

- loader: unirep's own batches (`features.image_batches`: PIL decode, uint8 tensor, batched resize + centre crop)
  with `--workers` DataLoader workers, no model;
- bare forward: `backbone(x)` on a ready normalised tensor (the ceiling);
- pipeline: `features.extract_features`, what `unirep eval` runs.

The loader limits when loader images/s < bare forward images/s (ratio < 1). On a GPU pass e.g.
`--device cuda --precision bf16 --workers 0 4 8 16`; benchmarks/gpu_figures.sh is the prepared GPU run.

    .venv/bin/python benchmarks/loader.py [--backbone random:resnet50] [--input-size 224] [--n 512] [--workers 0 2]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

os.environ.setdefault("UNIREP_QUIET", "1")  # no progress bars between the figures

from extract import bare_forward_images_per_second  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from unirep.backbones import create_backbone  # noqa: E402
from unirep.features import ExtractionSettings, extract_features, image_batches  # noqa: E402
from unirep.tasks.base import ImageSet  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "cat")
WIDTH, HEIGHT = 500, 375


def write_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """`n` 500 x 375 JPEG crops of scikit-image's photographs in `folder` (kept: a second run reuses them)."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo-{i:05d}.jpg" for i in range(n)]
    missing = [i for i, p in enumerate(paths) if not p.exists()]
    if not missing:
        return paths
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in PHOTOS]
    for i in missing:
        photo = photos[i % len(photos)]
        # At least the crop's size, up to 1.6x more: crops differ in scale as well as position.
        scale = max(WIDTH / photo.width, HEIGHT / photo.height) * rng.uniform(1.0, 1.6)
        resized = photo.resize((round(photo.width * scale) + 1, round(photo.height * scale) + 1), Image.BICUBIC)
        left = int(rng.integers(0, resized.width - WIDTH + 1))
        top = int(rng.integers(0, resized.height - HEIGHT + 1))
        crop = resized.crop((left, top, left + WIDTH, top + HEIGHT))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        tmp = paths[i].with_suffix(".tmp")
        crop.save(tmp, format="JPEG", quality=90)
        tmp.replace(paths[i])
    return paths


def jpeg_image_set(paths: list[Path]) -> ImageSet:
    return ImageSet([p.name for p in paths], np.zeros(len(paths), dtype=np.int64), lambda i: Image.open(paths[i]),
                    lambda i: str(paths[i]))


def loader_images_per_second(images: ImageSet, backbone, batch_size: int, workers: int) -> float:
    start = time.perf_counter()
    done = sum(len(batch) for batch in image_batches(images, backbone.data_config, batch_size, workers))
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="random:resnet50", help="random weights are fine for throughput")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--n", type=int, default=512, help="JPEGs timed")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers to try")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--jpeg-dir", default=str(Path("~/.cache/unirep/bench-jpegs-500x375").expanduser()))
    args = parser.parse_args()
    paths = write_jpegs(Path(args.jpeg_dir), args.n)
    images = jpeg_image_set(paths)
    backbone = create_backbone(args.backbone, input_size=args.input_size)
    mean_kb = np.mean([p.stat().st_size for p in paths]) / 1024
    print(f"{len(paths)} JPEGs {WIDTH}x{HEIGHT} (mean {mean_kb:.0f} KB) -> {backbone.data_config.input_size}px; "
          f"backbone={args.backbone} precision={args.precision} channels_last={args.channels_last} "
          f"batch={args.batch_size} threads={torch.get_num_threads()} cpus={os.cpu_count()}")
    for workers in args.workers:
        settings = ExtractionSettings(batch_size=args.batch_size, num_workers=workers, device=args.device,
                                      precision=args.precision, channels_last=args.channels_last)
        loader = loader_images_per_second(images, backbone, args.batch_size, workers)
        size = backbone.data_config.input_size
        bare = bare_forward_images_per_second(backbone, torch.randn(args.batch_size, 3, size, size), len(images),
                                              settings)
        pipeline = len(images) / extract_features(backbone, images, settings).seconds
        verdict = "the loader limits" if loader < bare else "the model limits"
        print(f"workers={workers}: loader {loader:7.1f} img/s, bare forward {bare:7.1f} img/s, pipeline "
              f"{pipeline:7.1f} img/s; loader/forward {loader / bare:.2f}x, pipeline/forward {pipeline / bare:.2f}x "
              f"({verdict})", flush=True)


if __name__ == "__main__":
    main()
