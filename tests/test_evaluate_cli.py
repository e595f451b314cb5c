"""End to end through the CLI on real embedded data (LFW faces, 200 images) with real backbones."""

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from unirep.cli import main
from unirep.features import ExtractionSettings, FeatureCache
from unirep.results import load_records, record_path
from unirep.tasks import create_task


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    out, cache = root / "out", root / "cache"
    code = main(["eval", "raw-pixels", "--tasks", "lfw-faces", "--protocols", "linear,knn,linear-2shot",
                 "--out", str(out), "--cache-dir", str(cache), "linear.n_c=12", "fewshot.seeds=[0,1]"])
    assert code == 0
    return out, cache


def test_records_schema_config_and_manifest(run_dir):
    out, _ = run_dir
    records, bad = load_records(out)
    assert not bad
    assert sorted((r.protocol, r.seed) for r in records) == [
        ("knn", 0), ("linear", 0), ("linear-2shot", 0), ("linear-2shot", 1)]
    task = create_task("lfw-faces")
    for record in records:
        assert record.split_manifest["digest"] == task.manifest.digest
        assert (record.n_train, record.n_val, record.n_test) == (100, 40, 60)
        assert record.config["linear"]["n_c"] == 12 and record.versions["torch"]
        assert len(record.test_predictions) == len(record.test_labels) == 60
        # the stored score is the metric of the stored predictions
        accuracy = 100 * np.mean(np.array(record.test_predictions) == np.array(record.test_labels))
        assert record.score == pytest.approx(accuracy)
    assert (out / "config.yaml").exists()
    subset = json.loads((out / "subsets" / "lfw-faces" / "linear-2shot-seed1.json").read_text())
    assert len(subset["train"]) == 2 and len(subset["val"]) == 2  # 2 shots x 2 classes, val inside the budget
    assert set(subset["train"]) <= set(task.manifest.splits["train"])


def test_linear_record_matches_independent_sklearn_fit(run_dir):
    """The probe's test accuracy equals sklearn's LogisticRegression at the selected C on the cached features."""
    out, cache = run_dir
    record = next(r for r in load_records(out)[0] if r.protocol == "linear")
    from unirep.backbones import create_backbone

    backbone, task = create_backbone("raw-pixels"), create_task("lfw-faces")
    splits = {s: FeatureCache(cache).get_or_extract(backbone, task.manifest, s, task.split(s), ExtractionSettings())
              for s in ("train", "val", "test")}
    assert all(s.cached for s in splits.values())
    X = np.concatenate([splits["train"].features, splits["val"].features])
    y = np.concatenate([splits["train"].labels, splits["val"].labels])
    scaler = StandardScaler().fit(X)
    clf = LogisticRegression(C=record.hyperparameters["C"], max_iter=5000).fit(scaler.transform(X), y)
    accuracy = 100 * clf.score(scaler.transform(splits["test"].features), splits["test"].labels)
    assert abs(accuracy - record.score) <= 100 / 60 + 1e-9  # within one test image of 60


def test_rerun_skips_existing_records_and_force_recomputes(run_dir, capsys):
    out, cache = run_dir
    path = record_path(out, "raw-pixels", "lfw-faces", "knn", 0)
    before = path.read_text()
    args = ["eval", "raw-pixels", "--tasks", "lfw-faces", "--protocols", "knn", "--out", str(out),
            "--cache-dir", str(cache)]
    assert main(args) == 0
    assert path.read_text() == before  # skipped: created_at unchanged
    assert main([*args, "--force"]) == 0
    assert json.loads(path.read_text())["created_at"] >= json.loads(before)["created_at"]
    assert "raw-pixels" in capsys.readouterr().out  # the summary table names what was evaluated


@pytest.mark.parametrize(("argv", "message"), [
    (["eval", "mobilenetv2_100.packaged", "--tasks", "lfw-faces"], "closest: mobilenetv2_100.packaged_in1k"),
    (["eval", "raw-pixels", "--tasks", "lfw-face"], "unknown task 'lfw-face': did you mean lfw-faces"),
    (["eval", "raw-pixels", "--tasks", "lfw-faces", "--protocols", "svm"], "unknown protocol 'svm'"),
    (["eval", "raw-pixels", "--tasks", "lfw-faces", "batch_size=many"], "invalid configuration"),
])
def test_bad_input_is_one_line_and_keeps_existing_records(run_dir, capsys, argv, message):
    out, cache = run_dir
    before = sorted(p.read_text() for p in (out / "records").rglob("*.json"))
    assert main([*argv, "--out", str(out), "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert sorted(p.read_text() for p in (out / "records").rglob("*.json")) == before


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["eval", "raw-pixels", "--tasks", "lfw-faces", "--out", str(blocker / "out")])
    assert code == 2 and "not writable" in capsys.readouterr().err


def test_list_commands(capsys):
    assert main(["list", "backbones", "*packaged*"]) == 0
    assert capsys.readouterr().out.split() == ["mobilenetv2_100.packaged_in1k", "tf_efficientnet_lite0.packaged_in1k",
                                               "tf_efficientnet_lite1.packaged_in1k"]
    assert main(["list", "tasks", "--suite", "offline"]) == 0
    listing = capsys.readouterr().out
    assert "fashion-mnist" in listing and "5000/1000/10000" in listing and len(listing.splitlines()) == 7
