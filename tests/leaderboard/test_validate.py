"""Submission validation: schema, committed split manifests, selection on val only."""

from __future__ import annotations

import json

import pytest
from leaderboard_records import BACKBONES, PROTOCOLS, make_record, manifest, write_manifests

from unirep.cli import main
from unirep.leaderboard.validate import validate_submission
from unirep.results import ResultRecord, record_path, write_record


@pytest.fixture
def manifests(tmp_path):
    return write_manifests(tmp_path / "manifests")


def problems_of(results, manifests) -> list[str]:
    return [p.message for p in validate_submission([results], manifests)]


def test_a_valid_submission_has_no_problems(results_dir, manifests):
    assert validate_submission([results_dir], manifests) == []


def test_split_digest_must_equal_the_committed_manifest(results_dir, manifests):
    other = manifest("faces")
    moved = {**other.splits, "test": other.splits["test"][1:] + other.splits["train"][:1]}
    changed = type(other)(task="faces", seed=0, data_sha256=other.data_sha256, splits=moved)
    write_record(results_dir, make_record("alpha-net", "faces", "linear", split_manifest=changed.summary()))
    found = validate_submission([results_dir], manifests)
    assert len(found) == 1
    assert found[0].path == str(record_path(results_dir, "alpha-net", "faces", "linear", 0))
    assert "differs from the committed tasks/manifests/faces.json" in found[0].message


def test_split_sizes_and_missing_manifests(results_dir, manifests):
    write_record(results_dir, make_record("beta-net", "digits", "knn", n_val=7))
    (manifests / "textures.json").unlink()
    found = problems_of(results_dir, manifests)
    assert any("split sizes differ" in m and "val 7 (manifest 150)" in m for m in found)
    textures = [m for m in found if "textures" in m]
    assert len(textures) == len(BACKBONES) * len(PROTOCOLS)
    assert all("no committed split manifest" in m for m in textures)


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"val_score": None}, "val_score is missing"),
    ({"val_score": 75.0}, "not the best score of its val sweep"),
    ({"hyperparameters": {"C": 0.1, "test_C": 1.0}}, "test-derived value(s) ['test_C']"),
    ({"extra": {"val_sweep": {"0.1": 80.0}, "test_sweep": {"0.1": 91.0}}}, "test-derived value(s) ['test_sweep']"),
    ({"score": 99.0}, "differs from top1 of its own test predictions"),
    ({"score": 150.0, "test_labels": None, "test_predictions": None}, "outside 0..100"),
    ({"hyperparameters": "C=0.1"}, "hyperparameters must be a JSON object"),
])
def test_selection_on_test_data_is_refused(tmp_path, manifests, overrides, expected):
    results = tmp_path / "results"
    write_record(results, make_record("alpha-net", "digits", "linear", **overrides))
    found = problems_of(results, manifests)
    assert len(found) == 1 and expected in found[0]


def test_estimators_without_selection_need_no_val_score(tmp_path, manifests):
    results = tmp_path / "results"
    write_record(results, make_record("alpha-net", "digits", "logme", metric="logme", score=-1.5, val_score=None,
                                      hyperparameters={}, extra={}, test_labels=None, test_predictions=None))
    assert problems_of(results, manifests) == []


def test_malformed_and_duplicate_records_are_problems(results_dir, manifests, tmp_path):
    bad = results_dir / "records" / "bad.json"
    bad.write_text("{not json")
    copy = tmp_path / "copy"
    write_record(copy, make_record("alpha-net", "digits", "linear"))
    found = validate_submission([results_dir, copy], manifests)
    assert [p.path for p in found] == [str(bad), str(record_path(copy, "alpha-net", "digits", "linear", 0))]
    assert "not a readable JSON record" in found[0].message and "duplicate of" in found[1].message


def test_build_validate_writes_nothing_when_invalid(results_dir, manifests, tmp_path, capsys):
    out = tmp_path / "lb"
    args = ["build", str(results_dir), "--out", str(out), "--n-boot", "0", "--validate", "--manifests", str(manifests)]
    assert main(args) == 0 and (out / "index.html").exists()
    raw = make_record("gamma-net", "textures", "knn").to_dict() | {"val_score": None}
    path = record_path(results_dir, "gamma-net", "textures", "knn", 0)
    path.write_text(json.dumps(raw))
    other = tmp_path / "lb2"
    assert main([*args[:3], str(other), *args[4:]]) == 2
    err = capsys.readouterr().err
    assert f"invalid: {path}: hyperparameters were selected but val_score is missing" in err
    assert "1 problem(s) in the submission" in err and not other.exists()



def test_records_on_a_real_published_split_pass(tmp_path):
    """A real task (LFW faces shipped in scikit-image), a real probe (sklearn logistic regression on raw pixels,
    C chosen on val), checked against the manifest committed under tasks/manifests."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from unirep.metrics import Metric
    from unirep.tasks import create_task

    task = create_task("lfw-faces")
    data = {s: task.split(s) for s in ("train", "val", "test")}
    X = {s: np.stack([np.asarray(img, dtype=np.float32).ravel() / 255 for img, _ in d]) for s, d in data.items()}
    y = {s: d.labels for s, d in data.items()}
    metric = Metric(task.card.metric)
    sweep = {C: metric(y["val"], LogisticRegression(C=C, max_iter=500).fit(X["train"], y["train"]).predict(X["val"]))
             for C in (0.01, 1.0)}
    best = max(sweep, key=sweep.get)
    probe = LogisticRegression(C=best, max_iter=500).fit(np.vstack([X["train"], X["val"]]),
                                                         np.concatenate([y["train"], y["val"]]))
    predictions = probe.predict(X["test"])
    counts = task.manifest.counts
    record = ResultRecord(**{
        **make_record("raw-pixels", "digits", "linear").to_dict(), "task": "lfw-faces", "metric": metric.value,
        "score": metric(y["test"], predictions), "val_score": sweep[best], "hyperparameters": {"C": best},
        "n_train": counts["train"], "n_val": counts["val"], "n_test": counts["test"],
        "split_manifest": task.manifest.summary(), "test_labels": y["test"].tolist(),
        "test_predictions": predictions.tolist(), "extra": {"val_sweep": {str(C): v for C, v in sweep.items()}}})
    write_record(tmp_path / "run", record)
    assert validate_submission([tmp_path / "run"]) == []  # default: the committed tasks/manifests
    write_record(tmp_path / "tampered", ResultRecord(**{**record.to_dict(), "score": record.score - 5.0}))
    assert [p.message.split(" differs")[0] for p in validate_submission([tmp_path / "tampered"])] == [
        f"score {record.score - 5.0}"]
