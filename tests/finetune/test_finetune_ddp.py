"""Lightning DDP on CPU (gloo): a 2-process fine-tune through the CLI chooses the same learning rate and epochs
and reaches the same test predictions as a 1-process run with the same global batch and seed. GroupNorm keeps the
network free of per-device batch statistics and augmentation is off, so both runs see the same global batches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from unirep.evaluate import evaluate
from unirep.results import read_record, record_path

ROOT = Path(__file__).resolve().parents[2]
BACKBONE = "random:test_efficientnet_gn"
SETTINGS = ("finetune.augment=false", "finetune.lrs=[0.3,0.1]", "finetune.max_epochs=2", "finetune.patience=1",
            "finetune.batch_size=32", "finetune.precision=32-true", "finetune.accelerator=cpu", "max_input_size=32")


def test_two_process_ddp_fine_tune_matches_a_single_process_one(tiny, tmp_path):
    ddp_out = tmp_path / "ddp"
    command = [sys.executable, "-m", "unirep.cli", "finetune", BACKBONE, *SETTINGS, "finetune.strategy=ddp",
               "finetune.devices=2", "--task", "lfw-faces", "--out", str(ddp_out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = read_record(record_path(ddp_out, BACKBONE, "lfw-faces", "finetune", 0))
    assert ddp.extra["world_size"] == 2
    assert done.stdout.count("records in") == 1  # only global rank 0 reports (and writes)

    cfg = tiny.config(f"backbones=[{BACKBONE}]", "tasks=[lfw-faces]", "protocols=[finetune]", *SETTINGS,
                      out=str(tmp_path / "single"))
    (single,) = evaluate(cfg)
    assert single.extra["world_size"] == 1
    assert ddp.hyperparameters == single.hyperparameters
    assert ddp.val_score == single.val_score and ddp.extra["val_sweep"] == single.extra["val_sweep"]
    assert ddp.test_predictions == single.test_predictions and ddp.score == single.score
    assert len(ddp.extra["curve"]) == len(single.extra["curve"])
    for a, b in zip(ddp.extra["curve"], single.extra["curve"], strict=True):
        assert a.get("val_score") == b.get("val_score")
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
