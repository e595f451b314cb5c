"""Backbones labelled `<name>@seed<k>` are grouped over training seeds: mean ± Student-t interval per task and for
the mean over tasks and mNRG (paired seed by seed), in seeds.csv, leaderboard.md and the page; source networks with
a single training seed get a note next to their rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from leaderboard_records import TASKS, make_record
from scipy import stats

from unirep.leaderboard import build_leaderboard, write_leaderboard
from unirep.leaderboard.seeds import split_seed_label
from unirep.results import write_record

SEEDS = (0, 1, 2)
GROUPS = {"alpha-net": "source:alpha", "beta-net": "source:beta", "gamma-net": "source:control"}
SOURCE = {"class": "SourceCheckpointBackbone"}


def seeded(backbone: str, label: str, task: str, protocol: str, seed: int):
    # Each training seed's scores come from its own per-example draws (make_record seeds them by `seed`).
    record = make_record(backbone, task, protocol, seed)
    identity = {**record.backbone_identity, **SOURCE, "name": label}
    return dataclasses.replace(record, backbone=label, backbone_identity=identity)


@pytest.fixture
def seed_records(tmp_path):
    records = [seeded(b, f"{label}@seed{s}", t, p, s) for b, label in GROUPS.items() for t in TASKS
               for p in ("linear", "knn") for s in SEEDS]
    records += [make_record("raw-pixels", t, p) for t in TASKS for p in ("linear", "knn")]
    for record in records:
        write_record(tmp_path / "results", record)
    return records


def t_interval(values):
    values = np.asarray(values, dtype=float)
    return stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))


def test_seed_groups_match_a_direct_t_interval(tmp_path, seed_records):
    board = build_leaderboard([tmp_path / "results"], reference="source:control@seed0", n_boot=0)
    table = board.seeds.set_index(["protocol", "backbone", "quantity"])
    assert set(table.index.get_level_values("backbone")) == {"source:alpha", "source:beta", "source:control"}
    score = {(r.backbone, r.task, r.protocol): r.score for r in seed_records}
    for protocol in ("linear", "knn"):
        for label in ("source:alpha", "source:beta"):
            for task in TASKS:
                values = [score[(f"{label}@seed{s}", task, protocol)] for s in SEEDS]
                row = table.loc[(protocol, label, task)]
                assert row["n_seeds"] == 3 and row["mean"] == pytest.approx(np.mean(values), abs=1e-9)
                assert (row["low"], row["high"]) == pytest.approx(t_interval(values), abs=1e-9)
            means = [np.mean([score[(f"{label}@seed{s}", t, protocol)] for t in TASKS]) for s in SEEDS]
            assert (table.loc[(protocol, label, "mean")][["low", "high"]].tolist()
                    == pytest.approx(t_interval(means), abs=1e-9))
            # mNRG of seed k against seed k of the control group, median over tasks.
            nrg = [100 * np.median([(score[(f"{label}@seed{s}", t, protocol)] - score[(f"source:control@seed{s}", t,
                                                                                         protocol)])
                                    / (100 - score[(f"source:control@seed{s}", t, protocol)]) for t in TASKS])
                   for s in SEEDS]
            assert (table.loc[(protocol, label, "mnrg")][["mean", "low", "high"]].tolist()
                    == pytest.approx([np.mean(nrg), *t_interval(nrg)], abs=1e-9))
        assert (protocol, "source:control", "mnrg") not in table.index  # the reference against itself: nothing
        assert (protocol, "raw-pixels", "mean") not in table.index  # plain labels are not seed groups
    assert board.single_seed == []  # every source network here has three seeds

    write_leaderboard(board, tmp_path / "lb")
    csv = pd.read_csv(tmp_path / "lb" / "seeds.csv")
    assert len(csv) == len(board.seeds) and set(csv["quantity"]) == {*TASKS, "mean", "mnrg"}
    markdown = (tmp_path / "lb" / "leaderboard.md").read_text()
    assert "## Training seeds" in markdown and "one training seed" not in markdown
    row = table.loc[("linear", "source:alpha", "mean")]
    assert f"{row['mean']:.2f} ± {row['half_width']:.2f}" in markdown
    page = (tmp_path / "lb" / "index.html").read_text()
    assert 'id="training-seeds"' in page and f"{row['mean']:.2f} ± {row['half_width']:.2f}" in page


def test_a_plain_reference_is_paired_with_every_seed(tmp_path, seed_records):
    board = build_leaderboard([tmp_path / "results"], reference="raw-pixels", n_boot=0)
    score = {(r.backbone, r.task, r.protocol): r.score for r in seed_records}
    nrg = [100 * np.median([(score[(f"source:beta@seed{s}", t, "knn")] - score[("raw-pixels", t, "knn")])
                            / (100 - score[("raw-pixels", t, "knn")]) for t in TASKS]) for s in SEEDS]
    row = board.seeds.set_index(["protocol", "backbone", "quantity"]).loc[("knn", "source:beta", "mnrg")]
    assert row["mean"] == pytest.approx(np.mean(nrg), abs=1e-9)


def test_source_networks_with_one_training_seed_are_flagged_next_to_their_rows(tmp_path):
    records = [seeded("alpha-net", "source:alpha", t, "linear", 0) for t in TASKS]  # no seed suffix
    records += [seeded("beta-net", "source:beta@seed0", t, "linear", 0) for t in TASKS]  # a group of one
    records += [make_record("raw-pixels", t, "linear") for t in TASKS]
    for record in records:
        write_record(tmp_path / "results", record)
    board = build_leaderboard([tmp_path / "results"], reference="raw-pixels", n_boot=0)
    assert board.single_seed == ["source:alpha", "source:beta@seed0"]  # raw-pixels was not trained here
    write_leaderboard(board, tmp_path / "lb")
    markdown = (tmp_path / "lb" / "leaderboard.md").read_text()
    note = "- source:alpha, source:beta@seed0: one training seed each"
    assert markdown.count(note) == len(board.blocks)  # under every block table that lists them
    (row,) = [line for line in markdown.splitlines() if line.startswith("| source:beta ")]
    assert row.split("|")[2].strip() == "1" and "±" not in row  # its seed-table row: one seed, no interval
    assert 'id="one-training-seed"' in (tmp_path / "lb" / "index.html").read_text()


def test_seed_labels_parse():
    assert split_seed_label("source:muldip@seed12") == ("source:muldip", 12)
    assert split_seed_label("source:muldip") == ("source:muldip", None)
    assert split_seed_label("net@seedling") == ("net@seedling", None)


def test_aggregates_use_only_the_tasks_every_seed_completed(tmp_path, seed_records):
    missing = tmp_path / "results" / "records" / "source_alpha_seed2" / "digits" / "linear-seed2.json"
    missing.unlink()
    board = build_leaderboard([tmp_path / "results"], n_boot=0)
    assert "linear: mean and mNRG are over 2 task(s) (faces, textures); digits lack some seed of some group" \
        in board.seed_notes
    score = {(r.backbone, r.task, r.protocol): r.score for r in seed_records}
    means = [np.mean([score[(f"source:beta@seed{s}", t, "linear")] for t in ("faces", "textures")]) for s in SEEDS]
    row = board.seeds.set_index(["protocol", "backbone", "quantity"]).loc[("linear", "source:beta", "mean")]
    assert row["mean"] == pytest.approx(np.mean(means), abs=1e-9)
    assert board.seeds.set_index(["protocol", "backbone", "quantity"]).loc[("linear", "source:alpha", "digits"),
                                                                            "n_seeds"] == 2
