"""The main job, `unirep run CONFIG`: train source schemes, evaluate them next to the packaged ImageNet backbones
and baselines on target tasks, and build the leaderboard. Every stage resumes from what is done (finished
source checkpoints, existing records, cached features), so a re-run with everything cached takes seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import MISSING, DictConfig, OmegaConf

from unirep.config import EvalConfig, save_config, to_container
from unirep.fileio import ensure_writable_dir


@dataclass
class LeaderboardSection:
    out: str = "leaderboard"
    reference: str | None = None  # backbone that mNRG / aNRG / Decathlon are relative to
    axis: str = "num_features"
    n_boot: int = 1000


@dataclass
class RunConfig:
    """`sources`: a source comparison preset (configs/sources/compare.yaml style) whose trained checkpoints join
    `eval.backbones` (named `source:<preset>`, or `source:<preset>@seed<k>` when it lists `seeds`); null to evaluate
    given backbones only."""

    out: str = "runs/quickstart"
    sources: str | None = None
    source_overrides: list[str] = field(default_factory=list)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(backbones=MISSING, tasks=MISSING))
    leaderboard: LeaderboardSection = field(default_factory=LeaderboardSection)


@dataclass
class RunSummary:
    eval_out: Path
    leaderboard_out: Path
    seconds: dict[str, float]
    source_rows: list[dict]
    board: object  # None on the other processes of a distributed eval


def run_pipeline(cfg: DictConfig) -> RunSummary:
    """Run the three stages of `cfg` (a resolved RunConfig) and return where everything went."""
    from unirep.distributed import launched_as_zero

    # A distributed eval (eval.strategy=ddp eval.devices=N) re-runs this command once per device: only global
    # rank 0 writes (the others find the finished source networks and join the eval).
    out = ensure_writable_dir(cfg.out) if launched_as_zero() else Path(cfg.out)
    if launched_as_zero():
        save_config(cfg, out / "config.yaml")
    seconds: dict[str, float] = {}
    eval_cfg = OmegaConf.merge(cfg.eval, {"out": str(out / "eval")})
    rows: list[dict] = []
    if cfg.sources:
        start = time.perf_counter()
        rows, source_backbones = train_sources(cfg.sources, list(cfg.source_overrides), out / "sources")
        seconds["sources"] = time.perf_counter() - start
        eval_cfg.backbones = [*to_container(eval_cfg)["backbones"], *source_backbones]

    from unirep.evaluate import evaluate, is_global_zero
    from unirep.leaderboard import build_leaderboard, write_leaderboard

    start = time.perf_counter()
    evaluate(eval_cfg)
    seconds["eval"] = time.perf_counter() - start
    if not is_global_zero():  # the other processes of a distributed eval: rank 0 builds the leaderboard
        return RunSummary(Path(eval_cfg.out), Path(cfg.leaderboard.out), seconds, rows, None)
    start = time.perf_counter()
    lb = cfg.leaderboard
    board = build_leaderboard([eval_cfg.out], reference=lb.reference, axis=lb.axis, n_boot=lb.n_boot)
    write_leaderboard(board, lb.out)
    seconds["leaderboard"] = time.perf_counter() - start
    return RunSummary(Path(eval_cfg.out), Path(lb.out), seconds, rows, board)


def train_sources(preset: str, overrides: list[str], out: Path) -> tuple[list[dict], list[dict]]:
    """Train the comparison preset into `out` (finished runs are reused) and return its summary rows and the
    backbone entries of its checkpoints."""
    from unirep.sources.compare import train_comparison

    compare_out, rows = train_comparison(preset, [*overrides, f"out={out}"])
    # The comparison writes the eval entries of its checkpoints (name, label, their own input size).
    backbones = OmegaConf.to_container(OmegaConf.load(compare_out / "eval.yaml").backbones)
    return rows, backbones
