"""The finetune protocol through the evaluation pipeline: one record per job, same schema as the probes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unirep.evaluate import evaluate
from unirep.results import load_records, read_record, record_path


def test_finetune_record_round_trips_and_holds_curve_choice_and_timings(tiny, tmp_path):
    # Default precision (auto = bf16-mixed on CPU) and augmentation: the path a user's run takes.
    cfg = tiny.config("tasks=[lfw-faces]", "protocols=[finetune]", "finetune.precision=auto", out=str(tmp_path))
    (record,) = evaluate(cfg)
    path = record_path(tmp_path, "random:test_resnet", "lfw-faces", "finetune", 0)
    assert read_record(path).to_dict() == record.to_dict()
    assert json.loads(path.read_text())["extra"]["curve"] == record.extra["curve"]
    good, bad = load_records(tmp_path)
    assert [r.protocol for r in good] == ["finetune"] and bad == []

    h = record.hyperparameters
    assert record.metric == "top1" and (record.n_train, record.n_val, record.n_test) == (100, 40, 60)
    assert h["lr"] in (0.2, 0.05) and 1 <= h["epochs"] <= 2
    assert (h["mode"], h["refit"], h["precision"], h["input_size"]) == ("full", "train+val", "bf16-mixed", 32)
    assert h["phases"] == [{"phase": "finetune", "lr": h["lr"], "epochs": h["epochs"], "lrs": [0.2, 0.05]}]
    curve = record.extra["curve"]
    selection = [e for e in curve if e["stage"] == "select"]
    refit = [e for e in curve if e["stage"] == "refit"]
    assert {e["candidate_lr"] for e in selection} == {0.2, 0.05} and len(refit) == h["epochs"]
    assert all(np.isfinite(e["train_loss"]) for e in curve) and "val_score" not in refit[0]
    assert record.val_score == max(e["val_score"] for e in selection if e["candidate_lr"] == h["lr"])
    assert set(record.timings) == {"protocol_s", "select_s", "refit_s", "predict_s"}
    assert len(record.test_predictions) == len(record.test_labels) == 60
    expected = 100.0 * np.mean(np.array(record.test_predictions) == np.array(record.test_labels))
    assert record.score == pytest.approx(expected)

    again = evaluate(cfg)  # an existing record is kept, not recomputed
    assert again[0].created_at == record.created_at and again[0].timings == record.timings
