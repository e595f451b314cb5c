"""Our extraction pipeline's images/s vs the bare model forward on ready tensors (same backbone, batch, threads).

The pipeline does everything a user's run does (read PIL images from the task, resize + crop, normalise,
forward, copy out); the reference only runs `backbone(x)` on a pre-built normalised tensor. Target: >= 0.9x.
Both are timed in alternating rounds (default 5) and the median of the per-round ratios is reported: a shared
2-core machine drifts by 10-15 % between consecutive runs, more than the gap being measured.

    .venv/bin/python benchmarks/extract.py [--backbone mobilenetv2_100.packaged_in1k] [--task fashion-mnist]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

os.environ.setdefault("UNIREP_QUIET", "1")  # no progress bars between the figures

from unirep.backbones import create_backbone  # noqa: E402
from unirep.features import ExtractionSettings, extract_features  # noqa: E402
from unirep.tasks import create_task  # noqa: E402


def bare_forward_images_per_second(backbone, batch: torch.Tensor, n_images: int, settings) -> float:
    """`backbone(batch)` repeated over `n_images` images on the settings' device, copied back to the CPU like the
    pipeline's features (benchmarks/loader.py uses it too)."""
    device = settings.resolved_device()
    backbone.eval().to(device)
    batch = batch.to(device)
    if settings.channels_last:
        backbone.to(memory_format=torch.channels_last)
        batch = batch.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), settings.autocast(device):
        backbone(batch)  # warm-up (cuDNN autotuning, allocator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, done = time.perf_counter(), 0
        while done < n_images:
            backbone(batch).float().cpu()
            done += len(batch)
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenetv2_100.packaged_in1k")
    parser.add_argument("--task", default="fashion-mnist")
    parser.add_argument("--split", default="test")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--n", type=int, default=4096, help="images timed")
    parser.add_argument("--rounds", type=int, default=5, help="alternating bare/pipeline rounds; median reported")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="NHWC memory format (unirep eval's default)")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    settings = ExtractionSettings(batch_size=args.batch_size, precision=args.precision,
                                  channels_last=args.channels_last)
    backbone = create_backbone(args.backbone, input_size=args.input_size)
    images = create_task(args.task).split(args.split)
    images = images.subset(range(min(args.n, len(images))))
    size = backbone.data_config.input_size
    ready = torch.randn(args.batch_size, 3, size, size)
    extract_features(backbone, images.subset(range(args.batch_size)), settings)  # warm-up
    print(f"backbone={args.backbone} task={args.task} n={len(images)} input={size}px batch={args.batch_size} "
          f"precision={args.precision} channels_last={args.channels_last} threads={torch.get_num_threads()}")
    ratios = []
    for round_number in range(1, args.rounds + 1):
        reference = bare_forward_images_per_second(backbone, ready, len(images), settings)
        pipeline = len(images) / extract_features(backbone, images, settings).seconds
        ratios.append(pipeline / reference)
        print(f"round {round_number}: bare forward on ready tensors {reference:7.1f} img/s, "
              f"unirep extraction pipeline {pipeline:7.1f} img/s, ratio {ratios[-1]:.2f}x", flush=True)
    print(f"median ratio pipeline / bare over {len(ratios)} rounds: {statistics.median(ratios):.2f}x "
          f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x; target >= 0.90x)")


if __name__ == "__main__":
    main()
