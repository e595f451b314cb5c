"""The leaderboard's OoD section: near / far AUROC and FPR95 per score with bootstrap CIs over test examples, in
ood.csv, leaderboard.md and the page, from OoD records next to the probe records. The CIs are checked against the
plain bootstrap loop (resample the arrays, recompute `ood_metrics`) on the same resample indices."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from ood_leaderboard_records import OOD_BACKBONES, OOD_BENCHMARK, OOD_SCORES, OOD_SETS, write_ood_grid

from unirep.cli import main
from unirep.leaderboard import build_leaderboard, write_leaderboard
from unirep.leaderboard.ood_section import OOD_COLUMNS, ood_display
from unirep.metrics import Metric
from unirep.ood.metrics import ood_metrics
from unirep.universality import iter_bootstrap_indices, task_resample_seed

N_BOOT = 200


def loop_bootstrap(record, key: str, metric: str, n_boot: int, seed: int = 0) -> np.ndarray:
    """The textbook bootstrap: draw index rows, resample both score arrays, recompute the metric."""
    id_scores = np.asarray(record.id_test_scores)
    id_rows = np.concatenate(list(iter_bootstrap_indices(len(id_scores), n_boot,
                                                         task_resample_seed(seed, f"{record.benchmark}:id/test"))))
    values = {}
    for name in [k for k in record.ood_test_scores if k == key or k.split("/")[0] == key]:
        ood = np.asarray(record.ood_test_scores[name])
        rows = np.concatenate(list(iter_bootstrap_indices(len(ood), n_boot,
                                                          task_resample_seed(seed, f"{record.benchmark}:{name}"))))
        values[name] = [ood_metrics(id_scores[a], ood[b])[metric] for a, b in zip(id_rows, rows, strict=True)]
    return np.mean(list(values.values()), axis=0)


@pytest.fixture
def ood_results(results_dir):
    records = write_ood_grid(results_dir)
    return results_dir, {(r.backbone, r.ood_score): r for r in records}


def test_cis_equal_the_plain_bootstrap_loop(ood_results):
    results_dir, records = ood_results
    board = build_leaderboard([results_dir], n_boot=N_BOOT)
    table = board.ood.set_index(["backbone", "score", "set"])
    record = records[("beta-net", "knn")]
    for key in ["near", "far", "far/digits"]:
        for metric in ("auroc", "fpr95_id_recall"):
            samples = loop_bootstrap(record, key, metric, N_BOOT)
            low, high = np.quantile(samples, [0.025, 0.975])
            row = table.loc[("beta-net", "knn", key)]
            assert row[f"{metric}_low"] == pytest.approx(low, abs=1e-9)
            assert row[f"{metric}_high"] == pytest.approx(high, abs=1e-9)
            expected = record.metrics[key] if "/" not in key else record.metrics["sets"][key]
            assert row[metric] == pytest.approx(expected[metric], abs=1e-12)
            assert row[f"{metric}_low"] <= row[metric] <= row[f"{metric}_high"]
            assert row[f"{metric}_high"] - row[f"{metric}_low"] > 0.5  # 90-200 examples: CIs a few points wide
    # ID accuracy's CI is unirep's task bootstrap over the same ID resamples
    stream = task_resample_seed(0, f"{OOD_BENCHMARK}:id/test")
    id_rows = np.concatenate(list(iter_bootstrap_indices(200, N_BOOT, stream)))
    labels, predictions = np.array(record.id_test_labels), np.array(record.id_test_predictions)
    accuracy = [Metric.TOP1(labels[r], predictions[r]) for r in id_rows]
    assert table.loc[("beta-net", "knn", "near"), "id_accuracy_low"] == pytest.approx(np.quantile(accuracy, 0.025))


def test_outputs_hold_the_section(ood_results, tmp_path):
    results_dir, records = ood_results
    out = tmp_path / "lb"
    assert main(["build", str(results_dir), "--out", str(out), "--n-boot", "50"]) == 0
    csv = pd.read_csv(out / "ood.csv")
    assert list(csv.columns) == OOD_COLUMNS
    n_sets = 2 + len(OOD_SETS)  # near and far means, then each set
    assert len(csv) == len(OOD_BACKBONES) * len(OOD_SCORES) * n_sets
    alpha_msp = csv[(csv["backbone"] == "alpha-net") & (csv["score"] == "msp")].set_index("set")
    assert alpha_msp.loc["far", "auroc"] == pytest.approx(records[("alpha-net", "msp")].metrics["far"]["auroc"],
                                                          abs=1e-4)
    assert json.loads(csv.loc[csv["score"] == "knn", "hyperparameters"].iloc[0]) == {"k": 50}
    assert alpha_msp.loc["near", "n_ood_test"] == 160 and alpha_msp.loc["far", "n_ood_test"] == 210
    # the better-separated backbone detects better, on every score (the data says so by construction)
    far = csv[csv["set"] == "far"].set_index(["score", "backbone"])["auroc"]
    assert all(far[(s, "alpha-net")] > far[(s, "beta-net")] for s in OOD_SCORES)

    markdown = (out / "leaderboard.md").read_text()
    section = markdown.split("## OoD detection")[1]
    assert "OoD examples accepted at the threshold keeping 95 % of the ID test examples" in section
    lines = [line for line in section.split(f"### {OOD_BENCHMARK}")[1].splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["backbone", "classifier", "score", "ID top-1", "near AUROC", "far AUROC", "near FPR95",
                      "far FPR95"]
    assert len(lines) == 2 + len(OOD_BACKBONES) * len(OOD_SCORES)
    board = build_leaderboard([results_dir], n_boot=50)
    shown = ood_display(board.ood, OOD_BENCHMARK).set_index(["backbone", "score"])
    near = board.ood.set_index(["backbone", "score", "set"]).loc[("alpha-net", "knn", "near")]
    assert shown.loc[("alpha-net", "knn"), "near AUROC"] == (f"{near['auroc']:.2f} [{near['auroc_low']:.2f}, "
                                                             f"{near['auroc_high']:.2f}]")
    page = (out / "index.html").read_text()
    assert 'id="ood-detection"' in page and f'data-benchmark="{OOD_BENCHMARK}"' in page
    assert shown.loc[("alpha-net", "knn"), "near AUROC"] in page


def test_without_ood_records_the_section_is_absent(results_dir, tmp_path):
    board = build_leaderboard([results_dir], n_boot=20)
    write_leaderboard(board, tmp_path / "lb")
    assert pd.read_csv(tmp_path / "lb" / "ood.csv").empty
    assert "OoD detection" not in (tmp_path / "lb" / "leaderboard.md").read_text()
    assert 'id="ood-detection"' not in (tmp_path / "lb" / "index.html").read_text()


def test_no_cis_with_n_boot_zero(ood_results):
    results_dir, _ = ood_results
    table = build_leaderboard([results_dir], n_boot=0).ood
    assert table["auroc"].notna().all() and table["auroc_low"].isna().all()
    assert "[" not in ood_display(table, OOD_BENCHMARK)["near AUROC"].iloc[0]


def test_a_folder_of_ood_records_alone_builds(tmp_path):
    # `unirep ood --out runs/ood` writes ood-records/ only; `unirep build runs/ood` shows its OoD section
    write_ood_grid(tmp_path / "ood")
    out = tmp_path / "lb"
    assert main(["build", str(tmp_path / "ood"), "--out", str(out), "--n-boot", "20"]) == 0
    assert len(pd.read_csv(out / "ood.csv")) == len(OOD_BACKBONES) * len(OOD_SCORES) * (2 + len(OOD_SETS))
    assert "## OoD detection" in (out / "leaderboard.md").read_text()
    page = (out / "index.html").read_text()
    assert 'id="ood-detection"' in page and "OoD detection section only" in page
    assert main(["build", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "x")]) == 2
