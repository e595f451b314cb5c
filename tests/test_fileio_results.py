import json
import os

import numpy as np
import pytest

from unirep.errors import DataError, OutputError
from unirep.fileio import atomic_save_npz, atomic_write_json, ensure_writable_dir, sha256_json
from unirep.results import ResultRecord, load_records, read_record, record_path, write_record


def make_record(**overrides) -> ResultRecord:
    values = dict(backbone="raw-pixels", task="sklearn-digits", protocol="linear", metric="top1", score=91.5,
                  val_score=90.0, hyperparameters={"C": 0.1}, n_train=1000, n_val=200, n_test=597,
                  split_manifest={"digest": "abc"}, seed=0, timings={"fit_s": 1.0}, versions={"torch": "x"},
                  config={"out": "runs"})
    values.update(overrides)
    return ResultRecord(**values)


def test_sha256_json_ignores_key_order():
    assert sha256_json({"a": 1, "b": [1, 2]}) == sha256_json({"b": [1, 2], "a": 1})
    assert sha256_json({"a": 1}) != sha256_json({"a": 2})


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"v": np.float32(1.5)})
    atomic_save_npz(tmp_path / "y.npz", a=np.arange(3))
    assert json.loads((tmp_path / "x.json").read_text()) == {"v": 1.5}
    assert np.load(tmp_path / "y.npz")["a"].tolist() == [0, 1, 2]
    assert sorted(os.listdir(tmp_path)) == ["x.json", "y.npz"]


def test_unwritable_output_dir_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(OutputError, match="not writable.*--out"):
        ensure_writable_dir(blocker / "sub")


def test_record_round_trip_and_path(tmp_path):
    record = make_record(test_labels=[1, 2], test_predictions=[1, 1])
    path = write_record(tmp_path, record)
    assert path == record_path(tmp_path, "raw-pixels", "sklearn-digits", "linear", 0)
    assert path.relative_to(tmp_path).parts == ("records", "raw-pixels", "sklearn-digits", "linear-seed0.json")
    assert read_record(path) == record


def test_load_records_names_malformed_and_keeps_good(tmp_path):
    write_record(tmp_path, make_record())
    write_record(tmp_path, make_record(task="lfw-faces"))
    bad_dir = tmp_path / "records" / "x" / "y"
    bad_dir.mkdir(parents=True)
    (bad_dir / "truncated.json").write_text('{"backbone": "x"')
    (bad_dir / "missing.json").write_text(json.dumps({"backbone": "x"}))
    raw = make_record().to_dict() | {"score": "high"}
    (bad_dir / "badscore.json").write_text(json.dumps(raw))
    good, bad = load_records(tmp_path)
    assert sorted(r.task for r in good) == ["lfw-faces", "sklearn-digits"]
    reasons = {p.name: why for p, why in bad}
    assert set(reasons) == {"truncated.json", "missing.json", "badscore.json"}
    assert "missing field" in reasons["missing.json"] and "score must be a number" in reasons["badscore.json"]


def test_unknown_field_rejected():
    with pytest.raises(DataError, match="unknown field"):
        ResultRecord.from_dict(make_record().to_dict() | {"test_selected_C": 1})
