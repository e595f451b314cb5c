"""The `ood` protocol inside `unirep eval`: the same records as `unirep ood` (equal per-example scores and choices on
the same features), next to the probe records, resumable; its settings checked before any task runs; and the layer
rule kept: code below unirep.ood reaches it only through the protocol registry's module list."""

from __future__ import annotations

import pytest
import torch

from unirep.cli import main
from unirep.config import EvalConfig, load_config
from unirep.ood.records import load_ood_records, ood_record_path
from unirep.pipeline import RunConfig
from unirep.results import load_records

BENCHMARK = "opencv-digits-ood"
SCORES = ["energy", "knn", "vim"]  # a logit score, a feature score with a grid, one that reads the head


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ood-protocol")
    common = ["raw-pixels", "--input-size", "8", "--cache-dir", str(root / "cache"), "linear.n_c=6"]
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small probe problems: one thread beats two contending ones on a busy machine
    try:
        assert main(["eval", *common, "--tasks", "opencv-digits", "--protocols", "linear,ood",
                     f"ood.scores=[{','.join(SCORES)}]", "--out", str(root / "eval")]) == 0
        assert main(["ood", *common, "--benchmarks", BENCHMARK, "--scores", ",".join(SCORES),
                     "--out", str(root / "ood")]) == 0
        yield root, common
    finally:
        torch.set_num_threads(before)


def test_eval_writes_the_records_unirep_ood_writes(runs):
    root, _ = runs
    probe, bad = load_records(root / "eval")
    assert bad == []  # the OoD records (under ood-records/) are not mistaken for probe records
    assert [(r.task, r.protocol) for r in probe] == [("opencv-digits", "linear")]  # the ood protocol has no task job
    from_eval = {r.ood_score: r for r in load_ood_records(root / "eval")}
    from_ood = {r.ood_score: r for r in load_ood_records(root / "ood")}
    assert sorted(from_eval) == sorted(from_ood) == sorted(SCORES)
    for name in SCORES:  # its benchmark came from the ID task (none named); everything scored equals unirep ood's
        a, b = from_eval[name], from_ood[name]
        assert a.benchmark == BENCHMARK and a.benchmark_manifest == b.benchmark_manifest
        assert a.hyperparameters == b.hyperparameters and a.val_selection == b.val_selection
        assert a.id_test_scores == b.id_test_scores and a.ood_test_scores == b.ood_test_scores
        assert a.metrics == b.metrics and a.id_accuracy == b.id_accuracy
        assert a.config["out"] == str(root / "eval") and a.config["benchmarks"] == [BENCHMARK]
    # one probe fit serves both: the OoD classifier is the linear probe on the benchmark's 6 ID classes
    assert from_eval["energy"].classifier_hyperparameters["C"] == from_ood["energy"].classifier_hyperparameters["C"]


def test_a_second_eval_resumes_without_recomputing(runs, capsys):
    root, common = runs
    paths = [ood_record_path(root / "eval", "raw-pixels", BENCHMARK, "linear", s) for s in SCORES]
    before = {p: p.stat().st_mtime_ns for p in paths}
    assert main(["eval", *common, "--tasks", "opencv-digits", "--protocols", "linear,ood",
                 f"ood.scores=[{','.join(SCORES)}]", "--out", str(root / "eval")]) == 0
    assert {p: p.stat().st_mtime_ns for p in paths} == before
    assert f"{len(SCORES)} OoD records" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "message"), [
    (["ood.benchmarks=[no-such-benchmark]"], "unknown OoD benchmark 'no-such-benchmark'"),
    (["ood.classifier=none", "ood.scores=[msp]"], "reads logits, but classifier=none has no head"),
    (["ood.scores=[no-such-score]"], "unknown OoD score 'no-such-score'"),
    (["--tasks", "lfw-faces"], "the ood protocol has no benchmark"),
])
def test_bad_settings_are_one_line_before_any_work(runs, tmp_path, capsys, extra, message):
    _, common = runs
    tasks = [] if "--tasks" in extra else ["--tasks", "opencv-digits"]
    assert main(["eval", *common, *tasks, "--protocols", "linear,ood", *extra, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad" / "records").exists() and not (tmp_path / "bad" / "ood-records").exists()


def test_run_configs_take_the_ood_section():
    cfg = load_config(RunConfig, dotlist=["eval.backbones=[raw-pixels]", "eval.tasks=[fashion-mnist]",
                                          "eval.protocols=[linear,ood]", "eval.ood.benchmarks=[fashion-mnist-ood]"])
    assert list(cfg.eval.ood.benchmarks) == ["fashion-mnist-ood"] and cfg.eval.ood.classifier == "linear"
    assert list(load_config(EvalConfig, dotlist=["backbones=[a]", "tasks=[b]"]).ood.scores) == []


def test_below_unirep_ood_only_the_protocol_registry_reaches_it():
    # tests/test_layering.py finds no import of unirep.ood below it; what remains is the registry's module list,
    # which names exactly the protocol module, and the protocol that module registers.
    from unirep.protocols import PROTOCOL_MODULES, PROTOCOLS, _import_protocols

    _import_protocols()
    assert [m for m in PROTOCOL_MODULES if m.startswith("unirep.ood")] == ["unirep.ood.protocol"]
    assert PROTOCOLS.get("ood").__module__ == "unirep.ood.protocol" and not PROTOCOLS.get("ood").per_task
