"""Does a too-high learning rate kill units? The quickstart source network (the reference scheme of
configs/sources/quickstart.yaml: half-width ResNet-18 with ReLU, Fashion-MNIST 2,000 train / 500 val at 32 px,
AdamW) trained at its learning rate, 10x and 100x it, over several seeds; the dead-unit share per stage and the
source val accuracy after every epoch, read back from each run's CSV log (written by the UnitStatsCallback that
source training wires by default), plus the untrained network (epoch 0) measured the same way.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/dead_units_study.py --out runs/dead-units-study
    .venv/bin/python scripts/dead_units_study.py --out runs/dead-units-study --summarize-only

Writes `<out>/summary.json` (every run's curves and wall time) and `<out>/summary.md` (mean +- 95 % t-interval
over seeds). Runs are resumed/reused by train_source, so a killed study continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np

from unirep.backbones.source_networks import NetworkSpec, SourceNetwork, create_trunk
from unirep.fewshot import mean_ci
from unirep.fileio import atomic_write_json, atomic_write_text
from unirep.sources.config import load_source_config
from unirep.sources.train import train_source
from unirep.training.data import cache_split
from unirep.training.unit_stats_callback import UnitStatsCallback

QUICKSTART = ["data.train_size=2000", "data.val_size=500", "optim.epochs=3"]  # configs/sources/quickstart.yaml
BASE_LR = 2e-3  # unirep/sources/config.py OptimConfig.lr, what the quickstart uses
STAGES = ["trunk.act1", "trunk.layer1", "trunk.layer2", "trunk.layer3", "trunk.layer4", "head", "all"]


def run_config(out: Path, factor: int, seed: int, extra: list[str]):
    dotlist = [*QUICKSTART, f"optim.lr={BASE_LR * factor:g}", f"seed={seed}", f"out={out}/lr{factor}x/seed{seed}",
               "trainer.progress_bar=false", *extra]
    return load_source_config("configs/sources/reference.yaml", dotlist)


def untrained_metrics(cfg) -> dict[str, float]:
    """Epoch 0: the network train_network would start from (same seed), measured as the callback does."""
    from unirep.backbones.base import DataConfig
    from unirep.sources.data import subset
    from unirep.tasks import create_task

    task = create_task(cfg.data.task)
    data_config = DataConfig(input_size=cfg.data.input_size, mean=tuple(cfg.data.mean), std=tuple(cfg.data.std),
                             interpolation="bilinear", crop_pct=1.0)
    val = cache_split(subset(task.split("val"), cfg.data.val_size, cfg.seed, "val"), data_config, "val")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # network index 0: seed = cfg.seed, as train_network
    spec = NetworkSpec(cfg.model.architecture, {"original": 10}, {}, cfg.model.small_input_stem, cfg.model.feature_dim)
    network = SourceNetwork(spec, trunk=create_trunk(spec, None))
    callback = UnitStatsCallback(val.images[:cfg.diagnostics.images], transform=data_config.normalize_batch)
    return callback.measure(network)


def read_curves(run_dir: Path) -> list[dict]:
    """Per-epoch rows of the run's CSV log: unit metrics and val accuracy (Lightning writes them on separate
    rows of one epoch; merged here)."""
    rows: dict[int, dict] = {}
    with open(run_dir / "nets" / "original" / "base" / "logs" / "version_0" / "metrics.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            epoch = int(row["epoch"])
            for key, value in row.items():
                if value not in ("", None) and (key.startswith("units/") or key == "val/acc_original"):
                    rows.setdefault(epoch, {})[key] = float(value)
    return [{"epoch": epoch + 1, **rows[epoch]} for epoch in sorted(rows)]


def summarize(runs: list[dict]) -> str:
    factors = sorted({r["factor"] for r in runs})
    epochs = sorted({c["epoch"] for r in runs for c in r["curve"]})
    lines = ["| lr | epoch | val top-1 % | " + " | ".join(f"dead {s} %" for s in STAGES) + " |",
             "|---|---|---|" + "---|" * len(STAGES)]

    def cell(values: list[float], scale: float = 100.0) -> str:
        values = [v for v in values if v is not None and np.isfinite(v)]
        if not values:
            return "–"
        mean, half = mean_ci(np.asarray(values) * scale)
        return f"{mean:.1f} ± {half:.1f}"

    for factor in factors:
        group = [r for r in runs if r["factor"] == factor]
        for epoch in epochs:
            rows = [next((c for c in r["curve"] if c["epoch"] == epoch), {}) for r in group]
            acc = cell([row.get("val/acc_original") for row in rows], 1.0) if epoch else "(untrained)"
            dead = [cell([row.get(f"units/dead_share/{s}") for row in rows]) for s in STAGES]
            lines.append(f"| {BASE_LR * factor:g} ({factor}x) | {epoch} | {acc} | " + " | ".join(dead) + " |")
    walls = {f: [r["seconds"] for r in runs if r["factor"] == f] for f in factors}
    lines.append("")
    lines.append(f"{len(runs)} runs, seeds {sorted({r['seed'] for r in runs})}; mean ± 95 % t-interval over seeds. "
                 "Training wall time per run (s): "
                 + ", ".join(f"{f}x {np.mean(w):.0f}" for f, w in walls.items())
                 + f"; total {sum(r['seconds'] for r in runs):.0f} s.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/dead-units-study"))
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--summarize-only", action="store_true")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[],
                        help="extra source-config dotlist entries (e.g. --set optim.epochs=6)")
    args = parser.parse_args()
    runs, start = [], time.perf_counter()
    for factor in args.factors:
        for seed in args.seeds:
            cfg = run_config(args.out, factor, seed, args.overrides)
            run_dir = Path(cfg.out)
            if not args.summarize_only:
                began = time.perf_counter()
                result = train_source(cfg)
                print(f"lr {factor}x seed {seed}: {time.perf_counter() - began:.0f} s "
                      f"(recorded training {result.seconds:.0f} s), val top-1 "
                      f"{result.metrics['original']['original']['top1']:.2f}", flush=True)
            metadata = json.loads((run_dir / "unirep-checkpoint.json").read_text(encoding="utf-8"))
            curve = [{"epoch": 0, **untrained_metrics(cfg)}, *read_curves(run_dir)]
            runs.append({"factor": factor, "lr": BASE_LR * factor, "seed": seed, "seconds": metadata["seconds"],
                         "final_val_top1": metadata["source_metrics"]["original"]["original"]["top1"],
                         "curve": curve})
    atomic_write_json(args.out / "summary.json", {"runs": runs, "overrides": [*QUICKSTART, *args.overrides],
                                                   "study_seconds": time.perf_counter() - start})
    table = summarize(runs)
    atomic_write_text(args.out / "summary.md", table)
    print(table)


if __name__ == "__main__":
    main()
