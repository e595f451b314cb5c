"""Leaderboard tables, aggregates, outputs and the `unirep build` command, on synthetic but valid records."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from leaderboard_records import BACKBONES, PROTOCOLS, SUITES, TASKS, make_record, write_grid
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from unirep.cli import main
from unirep.errors import DataError
from unirep.leaderboard import OUTPUT_FILES, build_leaderboard, write_leaderboard
from unirep.leaderboard.page import page_frame
from unirep.metrics import Metric
from unirep.results import write_record

N_BOOT = 200


def build(results: Path, **kwargs):
    kwargs = {"suites": SUITES, "n_boot": N_BOOT, **kwargs}
    return build_leaderboard([results], **kwargs)


def block(board, suite: str, protocol: str):
    return next(b for b in board.blocks if b.suite == suite and b.protocol == protocol)


def test_long_table_scores_match_sklearn_on_the_recorded_predictions(results_dir):
    board = build(results_dir)
    assert len(board.long) == len(BACKBONES) * len(TASKS) * len(PROTOCOLS)
    row = board.long.set_index(["backbone", "task", "protocol"]).loc[("beta-net", "faces", "linear")]
    record = make_record("beta-net", "faces", "linear")
    expected = 100 * balanced_accuracy_score(record.test_labels, record.test_predictions)  # mean per-class recall
    assert row["score"] == pytest.approx(expected)
    assert row["ci_low"] < row["score"] < row["ci_high"]
    digits = board.long.set_index(["backbone", "task", "protocol"]).loc[("gamma-net", "digits", "knn")]
    record = make_record("gamma-net", "digits", "knn")
    assert digits["score"] == pytest.approx(100 * accuracy_score(record.test_labels, record.test_predictions))
    assert json.loads(digits["hyperparameters"]) == {"k": 20}


def test_seeds_are_averaged_and_newest_duplicate_wins(tmp_path):
    results = tmp_path / "results"
    write_grid(results, seeds=(0, 1, 2))
    rerun = make_record("alpha-net", "digits", "linear", seed=1, score=12.5, test_labels=None,
                        test_predictions=None, created_at="2026-12-01T00:00:00+00:00")
    write_record(tmp_path / "rerun", rerun)
    # Few resamples: with several seeds the bootstrap scores one resample at a time.
    board = build_leaderboard([results, tmp_path / "rerun"], suites=SUITES, n_boot=50)
    row = board.long.set_index(["backbone", "task", "protocol"]).loc[("alpha-net", "digits", "linear")]
    seed_scores = [make_record("alpha-net", "digits", "linear", seed=s).score for s in (0, 2)] + [12.5]
    assert row["score"] == pytest.approx(np.mean(seed_scores))
    assert row["score_std"] == pytest.approx(np.std(seed_scores, ddof=1))
    assert row["n_seeds"] == 3 and row["seeds"] == "0;1;2"
    assert row["created_at"] == "2026-12-01T00:00:00+00:00"
    assert np.isnan(row["ci_low"])  # the re-run carries no predictions, so no CI is claimed
    assert any("alpha-net/digits/linear seed 1: kept the record of 2026-12-01" in n for n in board.notes)
    other = board.long.set_index(["backbone", "task", "protocol"]).loc[("beta-net", "digits", "linear")]
    assert other["ci_low"] < other["score"] < other["ci_high"]  # several seeds: CI of the seed mean


def test_wide_csv_is_backbone_by_task_per_protocol(results_dir, tmp_path):
    board = build(results_dir)
    write_leaderboard(board, tmp_path / "lb")
    wide = pd.read_csv(tmp_path / "lb" / "results-wide.csv")
    assert wide.shape == (len(PROTOCOLS) * len(BACKBONES), 2 + len(TASKS))
    assert list(wide.columns) == ["protocol", "backbone", *sorted(TASKS)]
    assert sorted(wide["protocol"].unique()) == sorted(PROTOCOLS)
    long = pd.read_csv(tmp_path / "lb" / "results-long.csv")
    for _, row in long.iterrows():
        cell = wide.set_index(["protocol", "backbone"]).loc[(row["protocol"], row["backbone"]), row["task"]]
        assert cell == pytest.approx(row["score"], abs=1e-4)


def test_aggregates_match_an_independent_computation(results_dir):
    board = build(results_dir, reference="raw-pixels")
    table = board.wide[board.wide["protocol"] == "linear"].set_index("backbone")[sorted(TASKS)]
    linear = block(board, "all", "linear")
    assert linear.headline == "mnrg"
    ref = table.loc["raw-pixels"]
    for backbone, scores in table.iterrows():
        nrg = (scores - ref) / (100.0 - ref)
        assert linear.aggregates.loc[backbone, "mean"] == pytest.approx(scores.mean())
        assert linear.aggregates.loc[backbone, "mnrg"] == pytest.approx(100 * np.median(nrg))
        low, high = linear.aggregates.loc[backbone, ["mean_low", "mean_high"]]
        assert low <= scores.mean() <= high
    # Borda: M - rank + 1 per task, summed; the synthetic accuracies order the backbones on every task.
    assert linear.aggregates["borda"].to_dict() == {"alpha-net": 12, "beta-net": 9, "gamma-net": 6, "raw-pixels": 3}
    assert linear.ranks().to_dict() == {"alpha-net": 1, "beta-net": 2, "gamma-net": 3, "raw-pixels": 4}


def test_suites_make_blocks_over_their_tasks(results_dir):
    board = build(results_dir)
    assert [(b.suite, b.protocol) for b in board.blocks] == [
        ("all", "knn"), ("all", "linear"), ("offline", "knn"), ("offline", "linear"), ("small", "knn"),
        ("small", "linear")]
    small = block(board, "small", "knn")
    assert small.tasks == ["faces", "textures"]
    table = board.wide[board.wide["protocol"] == "knn"].set_index("backbone")[["faces", "textures"]]
    assert small.aggregates["mean"].to_dict() == pytest.approx(table.mean(axis=1).to_dict())
    assert small.headline == "mean"  # no reference given: no mNRG


def test_incomplete_backbones_are_listed_but_not_ranked(tmp_path):
    results = tmp_path / "results"
    write_grid(results, backbones=("alpha-net", "beta-net", "gamma-net"))
    write_grid(results, backbones=("raw-pixels",), tasks=("digits", "faces"))
    board = build(results, reference="raw-pixels")
    linear = block(board, "all", "linear")
    assert linear.done["raw-pixels"] == 2 and "raw-pixels" not in linear.aggregates.index
    assert "mnrg" not in linear.names and any("reference 'raw-pixels'" in n for n in linear.notes)
    frame, _ = page_frame(board)
    row = frame[(frame["suite"] == "all") & (frame["protocol"] == "linear") & (frame["backbone"] == "raw-pixels")]
    assert row["tasks"].item() == "2/3" and np.isnan(row["rank"].item()) and np.isnan(row["textures"].item())
    offline = block(board, "offline", "linear")  # digits + faces: raw-pixels is complete there
    assert "raw-pixels" in offline.aggregates.index and offline.headline == "mnrg"


def test_malformed_records_are_named_and_skipped_good_ones_kept(results_dir, tmp_path):
    bad_dir = results_dir / "records" / "broken"
    bad_dir.mkdir(parents=True)
    (bad_dir / "truncated.json").write_text('{"backbone": "x"')
    (bad_dir / "missing-fields.json").write_text(json.dumps({"backbone": "x", "task": "digits"}))
    good = make_record("alpha-net", "digits", "linear").to_dict()
    (bad_dir / "text-score.json").write_text(json.dumps(good | {"score": "high"}))
    (bad_dir / "list-config.json").write_text(json.dumps(good | {"backbone": "delta-net", "config": ["x"]}))
    board = build(results_dir)
    assert board.n_records == len(BACKBONES) * len(TASKS) * len(PROTOCOLS)
    assert "delta-net" not in board.backbones
    names = ["list-config.json", "missing-fields.json", "text-score.json", "truncated.json"]
    assert sorted(Path(p).name for p, _ in board.skipped) == names
    reasons = {Path(p).name: why for p, why in board.skipped}
    assert "missing field(s)" in reasons["missing-fields.json"]
    assert "score must be a number" in reasons["text-score.json"]
    assert reasons["list-config.json"] == "config must be a JSON object, got list"
    write_leaderboard(board, tmp_path / "lb")
    page = (tmp_path / "lb" / "index.html").read_text()
    markdown = (tmp_path / "lb" / "leaderboard.md").read_text()
    for name in names:
        assert name in page and name in markdown


def test_rebuild_gives_the_same_bytes(results_dir, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    write_leaderboard(build(results_dir, reference="raw-pixels"), first)
    snapshot = {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()}
    write_leaderboard(build(results_dir, reference="raw-pixels"), first)  # in place
    write_leaderboard(build(results_dir, reference="raw-pixels"), second)  # elsewhere
    for out in (first, second):
        files = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        assert files.keys() == snapshot.keys()
        assert all(files[k] == snapshot[k] for k in files), [str(k) for k in files if files[k] != snapshot[k]]
    assert set(OUTPUT_FILES) <= {str(k) for k in snapshot}


def test_markdown_table_content(results_dir, tmp_path):
    board = build(results_dir, reference="raw-pixels")
    write_leaderboard(board, tmp_path / "lb")
    markdown = (tmp_path / "lb" / "leaderboard.md").read_text()
    section = markdown.split("## linear · all tasks (3)")[1].split("## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["rank", "backbone", "mean", "mean rank", "mNRG", "Borda", "z-score", "tasks", "digits",
                      "faces", "textures"]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [r[:2] for r in rows] == [["1", "alpha-net"], ["2", "beta-net"], ["3", "gamma-net"], ["4", "raw-pixels"]]
    aggregates = block(board, "all", "linear").aggregates.loc["beta-net"]
    beta = dict(zip(header, rows[1], strict=True))
    assert beta["mean"] == (f"{aggregates['mean']:.2f} [{aggregates['mean_low']:.2f}, "
                            f"{aggregates['mean_high']:.2f}]")
    assert beta["mNRG"].startswith(f"{aggregates['mnrg']:.2f} [")
    assert beta["faces"] == f"{make_record('beta-net', 'faces', 'linear').score:.2f}"
    assert rows[3][4].startswith("0.00")  # the reference's own mNRG
    assert "## knn · suite small (2)" in markdown


def test_scores_that_are_not_percentages_are_listed_without_aggregates(results_dir):
    for backbone in BACKBONES:
        write_record(results_dir, make_record(backbone, "digits", "logme", metric="logme", score=-1.5,
                                              test_labels=None, test_predictions=None, val_score=None,
                                              hyperparameters={}))
    board = build(results_dir)
    logme = block(board, "all", "logme")
    assert logme.aggregates.empty and "not a percentage" in logme.notes[0]
    assert board.wide.set_index(["protocol", "backbone"]).loc[("logme", "alpha-net"), "digits"] == -1.5


def test_universality_axis_from_backbone_identity(results_dir):
    board = build(results_dir, axis="params")
    assert board.axis_values == {b: float(p) for b, (_, p) in BACKBONES.items()}
    missing = build(results_dir, axis="source_accuracy")
    assert missing.axis_values == {}
    from unirep.leaderboard.page import axis_hint

    assert "num_features" in axis_hint(missing) and "params" in axis_hint(missing)


def test_cli_build_writes_everything(results_dir, tmp_path, capsys):
    out = tmp_path / "lb"
    assert main(["build", str(results_dir), "--out", str(out), "--reference", "raw-pixels", "--n-boot", "50"]) == 0
    assert {p.name for p in out.iterdir()} >= set(OUTPUT_FILES) | {"assets"}
    assert "24 records (0 skipped): 4 backbones x 3 tasks x 2 protocols" in capsys.readouterr().out


def test_cli_build_errors_are_one_line(tmp_path, capsys):
    assert main(["build", str(tmp_path / "nowhere"), "--out", str(tmp_path / "lb")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err
    (tmp_path / "empty" / "records").mkdir(parents=True)
    assert main(["build", str(tmp_path / "empty"), "--out", str(tmp_path / "lb")]) == 2
    assert "no readable result records" in capsys.readouterr().err
    with pytest.raises(DataError, match="no readable result records"):
        build_leaderboard([tmp_path / "empty"])


def test_aggregate_cis_with_one_backbone_run_on_several_seeds(tmp_path):
    results = tmp_path / "results"
    write_grid(results)
    write_grid(results, backbones=("beta-net",), seeds=(1, 2))
    board = build(results, n_boot=50)
    linear = block(board, "all", "linear")
    assert not any("no CIs" in n for n in linear.notes)
    for backbone, row in linear.aggregates.iterrows():
        assert row["mean_low"] <= row["mean"] <= row["mean_high"], backbone
    seed_means = [np.mean([make_record("beta-net", t, "linear", seed=s).score for s in (0, 1, 2)]) for t in TASKS]
    assert linear.aggregates.loc["beta-net", "mean"] == pytest.approx(np.mean(seed_means))


def test_multilabel_map_records_are_aggregated(tmp_path):
    rng = np.random.default_rng(0)
    targets = (rng.random((40, 3)) < 0.4).astype(int)
    targets[0] = 1  # every class has a positive
    for backbone, noise in (("alpha-net", 0.2), ("beta-net", 1.0)):
        scores = targets + noise * rng.standard_normal(targets.shape)
        record = replace(make_record(backbone, "digits", "linear"), task="voc-like", metric="map", n_test=40,
                         score=Metric("map")(targets, scores), test_labels=targets.tolist(),
                         test_predictions=scores.tolist())
        write_record(tmp_path, record)
    board = build(tmp_path)
    scores = block(board, "all", "linear").aggregates["mean"]
    assert scores["alpha-net"] > scores["beta-net"] and 0 < scores["beta-net"] < 100
