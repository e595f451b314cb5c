"""`unirep run`: source schemes -> evaluation next to other backbones -> leaderboard, in one command, resuming
from everything already done. Tiny sources (test_resnet at 16 px on 200 digits), real data, real probes."""

from __future__ import annotations

import json

import pandas as pd
import yaml

from unirep.cli import main
from unirep.config import load_config
from unirep.pipeline import RunConfig
from unirep.sources.compare import ComparisonConfig


def test_shipped_main_job_config_resolves():
    cfg = load_config(RunConfig, "configs/quickstart.yaml")
    sources = load_config(ComparisonConfig, cfg.sources)
    assert list(sources.compare) == ["reference", "mucale"] and sources.random_init
    assert {"linear", "knn"} <= set(cfg.eval.protocols) and list(cfg.eval.tasks) == ["offline"]


def test_run_trains_evaluates_builds_and_resumes(tmp_path, tiny, capsys):
    shared = [item for item in tiny.dotlist(tmp_path, "reference") if not item.startswith(("scheme=", "out="))]
    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump({"compare": ["reference", "pair"], "overrides": shared}))
    # MuCaLe-style pair; digits have no class hierarchy, so the coarse label set is a random regrouping.
    (tmp_path / "pair.yaml").write_text("scheme: muldip\nlabel_sets: [{kind: original}, {kind: random, omega: 3}]\n")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "out": str(tmp_path / "run"), "sources": str(sources),
        "eval": {"backbones": ["raw-pixels"], "tasks": ["sklearn-digits"], "protocols": ["linear", "knn", "logme"],
                 "cache_dir": str(tmp_path / "cache"), "linear": {"n_c": 8}},
        "leaderboard": {"out": str(tmp_path / "board"), "reference": "raw-pixels", "n_boot": 50},
    }))
    assert main(["run", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "leaderboard page:" in printed and "source:pair" in printed

    long = pd.read_csv(tmp_path / "board" / "results-long.csv")
    backbones = {"raw-pixels", "source:reference", "source:pair", "source:random-init"}
    assert set(long.backbone) == backbones
    assert len(long) == len(backbones) * 3  # 3 protocols on 1 task, nothing missing
    probes = long[long.protocol.isin(["linear", "knn"])]
    assert probes.score.between(10, 100).all()  # 10 digit classes: every representation beats chance here
    # The main job's config and the source comparison's summary are kept.
    assert (tmp_path / "run" / "config.yaml").exists()
    runs = json.loads((tmp_path / "run" / "sources" / "comparison.json").read_text())["runs"]
    assert [r["preset"] for r in runs] == ["reference", "pair", "random-init"]

    # A second run redoes nothing: same records byte for byte, no training, no extraction.
    records = sorted((tmp_path / "run" / "eval" / "records").rglob("*.json"))
    before = {p: p.read_bytes() for p in records}
    mtimes = {p: p.stat().st_mtime_ns for p in records}
    board_csv = (tmp_path / "board" / "results-long.csv").read_bytes()
    assert main(["run", str(config)]) == 0
    assert {p: p.read_bytes() for p in records} == before
    assert {p: p.stat().st_mtime_ns for p in records} == mtimes
    assert (tmp_path / "board" / "results-long.csv").read_bytes() == board_csv  # the leaderboard is idempotent
