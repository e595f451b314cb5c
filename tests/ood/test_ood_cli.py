"""`unirep ood` end to end on the real embedded data: raw pixels (8 px) on the digits benchmark, every score, records
that recompute from their own per-example scores, a resumed run that recomputes nothing, and one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unirep.cli import main
from unirep.metrics import Metric
from unirep.ood.metrics import CONVENTIONS, ood_metrics
from unirep.ood.records import OodRecord, load_ood_records, ood_record_path

BENCHMARK = "opencv-digits-ood"
SCORES_WITH_HEAD = ["energy", "entropy", "gen", "knn", "mahalanobis", "max-logit", "msp", "react", "rmds", "vim"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ood-cli")
    argv = ["ood", "raw-pixels", "--input-size", "8", "--benchmarks", BENCHMARK, "--out", str(root / "out"),
            "--cache-dir", str(root / "cache"), "linear.n_c=6"]
    # The probe's problem is small (1,200 x 192): one thread is faster than two contending ones on a busy machine
    # (measured here: 32 s with two threads against a few with one).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield root, argv
    torch.set_num_threads(before)


def test_one_record_per_score_recomputable_from_its_per_example_scores(run, capsys):
    root, argv = run
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "skipped ash on raw-pixels/opencv-digits-ood" in captured.err  # normalised pixels are negative
    note = ood_record_path(root / "out", "raw-pixels", BENCHMARK, "linear", "ash").with_suffix(".skipped")
    assert "non-negative" in note.read_text()
    records = {r.ood_score: r for r in load_ood_records(root / "out")}
    assert sorted(records) == SCORES_WITH_HEAD
    for name, record in records.items():
        assert isinstance(record, OodRecord) and record.benchmark == BENCHMARK and record.classifier == "linear"
        assert set(record.conventions) >= set(CONVENTIONS) and record.paper
        counts = record.benchmark_manifest["counts"]
        assert len(record.id_test_scores) == counts["id/test"] == len(record.id_test_labels)
        assert record.id_accuracy == pytest.approx(Metric.TOP1(np.array(record.id_test_labels),
                                                               np.array(record.id_test_predictions)))
        assert record.classifier_hyperparameters["C"] > 0
        assert sorted(record.metrics["sets"]) == sorted(record.ood_test_scores) == sorted(
            ["near/held-out-digits", "far/fashion-articles", "far/animal-silhouettes", "far/texture-patches"])
        for key, scores in record.ood_test_scores.items():
            assert len(scores) == counts[key]
            assert record.metrics["sets"][key] == pytest.approx(ood_metrics(np.array(record.id_test_scores),
                                                                            np.array(scores)), abs=1e-9)
        far = [record.metrics["sets"][k]["auroc"] for k in record.metrics["sets"] if k.startswith("far/")]
        assert record.metrics["far"]["auroc"] == pytest.approx(np.mean(far))
        assert record.metrics["near"] == record.metrics["sets"]["near/held-out-digits"]
        if name in ("react", "vim", "knn"):  # a grid: chosen on the val OoD set, every candidate recorded
            assert record.val_selection["val_ood_set"] == "val/sklearn-digits-6-9"
            best = max(record.val_selection["candidates"], key=lambda c: c["val_auroc"])
            assert best["params"] == {k: record.hyperparameters[k] for k in best["params"]}
    assert len({r.id_accuracy for r in records.values()}) == 1  # one classifier serves every score
    assert "near_auroc" in captured.out and "mahalanobis" in captured.out


def test_a_second_run_resumes_without_recomputing(run, capsys):
    root, argv = run
    paths = [ood_record_path(root / "out", "raw-pixels", BENCHMARK, "linear", s) for s in SCORES_WITH_HEAD]
    before = {p: p.stat().st_mtime_ns for p in paths}
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in paths} == before
    captured = capsys.readouterr()
    assert "10 records" in captured.out and "skipped" not in captured.err  # nothing built, extracted or fitted


def test_feature_only_scores_run_without_a_head(run, capsys):
    root, argv = run
    assert main([*argv, "--classifier", "none", "--scores", "knn,mahalanobis"]) == 0
    record = next(r for r in load_ood_records(root / "out") if r.classifier == "none" and r.ood_score == "knn")
    linear = next(r for r in load_ood_records(root / "out") if r.classifier == "linear" and r.ood_score == "knn")
    assert record.id_accuracy is None and record.id_test_scores == linear.id_test_scores


@pytest.mark.parametrize(("extra", "message"), [
    (["--scores", "msp,no-such-score"], "unknown OoD score 'no-such-score'"),
    (["--classifier", "none", "--scores", "msp"], "reads logits, but classifier=none has no head"),
    (["--benchmarks", "no-such-benchmark"], "unknown OoD benchmark 'no-such-benchmark'"),
    (["batch_size=0"], "batch_size must be >= 1"),
])
def test_bad_input_is_one_line_and_exit_code_2(run, capsys, extra, message, tmp_path):
    root, argv = run
    argv = [a if a != str(root / "out") else str(tmp_path / "bad") for a in argv]
    if extra[0] == "--benchmarks":
        argv[argv.index("--benchmarks") + 1] = extra[1]
        extra = []
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad" / "ood-records").exists()


def test_unirep_list_names_the_benchmarks_and_the_scores(capsys):
    from unirep.ood import list_benchmarks, list_scores

    assert main(["list", "ood-benchmarks"]) == 0
    assert capsys.readouterr().out.split() == list_benchmarks() == sorted([BENCHMARK, "fashion-mnist-ood",
                                                                           "animal-mnist-ood"])
    assert main(["list", "ood-scores", "m*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_scores("m*")
    assert next(line for line in lines if line.startswith("mahalanobis")).split()[1] == "features"
    assert "Hendrycks & Gimpel" in next(line for line in lines if line.startswith("msp"))


PLUGIN = '''
import numpy as np
from unirep.ood import register_score


@register_score("test-plugin-margin", paper="margin between the two largest logits (a test plugin)")
def top2_margin(logits):
    top = np.sort(logits, axis=1)
    return top[:, -1] - top[:, -2]
'''


def test_a_plugin_file_adds_a_score_to_the_run(run, tmp_path, capsys):
    from unirep.ood import SCORES

    root, argv = run
    plugin = tmp_path / "my_score.py"
    plugin.write_text(PLUGIN, encoding="utf-8")
    try:
        assert main([*argv, "--plugin", str(plugin), "--scores", "test-plugin-margin,energy"]) == 0
        record = next(r for r in load_ood_records(root / "out") if r.ood_score == "test-plugin-margin")
        energy = next(r for r in load_ood_records(root / "out") if r.ood_score == "energy")
        assert record.id_accuracy == energy.id_accuracy and 0 < record.metrics["near"]["auroc"] < 100
        assert "test-plugin-margin" in capsys.readouterr().out
    finally:
        SCORES._entries.pop("test-plugin-margin", None)
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n", encoding="utf-8")
    assert main([*argv, "--plugin", str(tmp_path / "broken.py")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--plugin" in err and "RuntimeError: boom" in err and len(err.splitlines()) == 1
