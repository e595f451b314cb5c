"""Every fine-tuning mode the CLI offers, end to end through the evaluation pipeline with its train+val refit, on
scikit-image's LFW crops (100 train / 40 val / 60 test) with a tiny seeded timm network at 32 px; a failure after
selection keeps the selection, and a re-run starts from it without a second sweep."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import unirep.finetune.select as select_module
from unirep.backbones import create_backbone
from unirep.evaluate import evaluate
from unirep.finetune.module import Classifier
from unirep.finetune.saved_selection import SavedSelection
from unirep.metrics import Metric
from unirep.probes.linear import DEFAULT_CS
from unirep.tasks import create_task
from unirep.training.data import cache_split
from unirep.training.optim import WEIGHT_DECAY_RULE

TASK = "lfw-faces"
BACKBONE = "random:test_resnet"
C_GRID = DEFAULT_CS  # the linear probe's grid, whose values the record must hold exactly
# name -> (overrides, the phases it runs, the last phase's candidate learning rates). LP-FT's fine-tuning phase runs
# at lrs x lpft_lr_factor (0.1). The probe head of a random network reads features whose spread is tiny in some
# dimensions, so its weights are large and fine-tuning through it diverges at higher rates: val is separable here, and
# the probe, choosing C on tight solutions, picks C = 1778 (the smallest C whose exact minimiser gets val 100 %; the
# loose choice was 1.78 at 97.5 %), whose head diverges at lr 0.001.
MODES = {
    "full": ((), ["finetune"], [0.2, 0.05]),
    "last-k": (("finetune.mode=last-k", "finetune.last_k=2"), ["last-2"], [0.2, 0.05]),
    "lp-ft-probe": (("finetune.mode=lp-ft", "finetune.lp_head=probe", "finetune.lrs=[0.003,0.001]"),
                    ["linear-probe", "finetune"], [0.0003, 0.0001]),
    "lp-ft-sgd": (("finetune.mode=lp-ft", "finetune.lp_head=sgd", "finetune.lp_lrs=[0.5]",
                   "finetune.lp_max_epochs=1", "finetune.lrs=[0.3,0.1]"), ["head", "finetune"], [0.03, 0.01]),
}


@pytest.fixture
def captured(monkeypatch):
    """The FineTuneResult each protocol run returns (the real function, observed), in call order."""
    results = []
    real = select_module.finetune

    def observed(*args, **kwargs):
        results.append(real(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(select_module, "finetune", observed)
    return results


def run_config(tiny, tmp_path, *overrides):
    return tiny.config(f"backbones=[{BACKBONE}]", f"tasks=[{TASK}]", "protocols=[finetune]",
                       f"cache_dir={tmp_path / 'cache'}", *overrides, out=str(tmp_path / "run"))


def pristine_net(num_classes: int) -> Classifier:
    return Classifier(create_backbone(BACKBONE, input_size=32), num_classes, seed=0)


def independent_test_predictions(net: Classifier, images) -> tuple[np.ndarray, np.ndarray]:
    """Argmax and top-2 margin of `net` on the test images, one plain fp32 forward pass over the whole split."""
    split = cache_split(images, net.backbone.data_config, "test")
    with torch.no_grad():
        logits = net.eval()(net.backbone.data_config.normalize_batch(split.images)).float()
    top2 = logits.topk(2, dim=1).values
    return logits.argmax(1).numpy(), (top2[:, 0] - top2[:, 1]).numpy()


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_selects_refits_on_train_and_val_and_scores_its_predictions(mode, tiny, tmp_path, captured):
    overrides, phases, last_lrs = MODES[mode]
    cfg = run_config(tiny, tmp_path, *overrides)
    (record,) = evaluate(cfg)
    (result,) = captured
    h = record.hyperparameters
    task = create_task(TASK)

    # The record says what was chosen, phase by phase, within the candidates the config gave.
    assert [p["phase"] for p in h["phases"]] == phases and h["refit"] == "train+val"
    assert h["mode"] == cfg.finetune.mode and h["weight_decay_rule"] == WEIGHT_DECAY_RULE
    assert h["phases"][-1]["lrs"] == last_lrs and h["lr"] in last_lrs and 1 <= h["epochs"] <= 2
    assert (h["lr"], h["epochs"]) == (h["phases"][-1]["lr"], h["phases"][-1]["epochs"])
    if mode == "lp-ft-probe":
        assert h["phases"][0]["C"] in C_GRID and h["lp_head"] == "probe"
    if mode == "lp-ft-sgd":
        assert h["phases"][0] == {"phase": "head", "lr": 0.5, "epochs": 1, "lrs": [0.5]}
    if mode == "last-k":
        assert h["last_k"] == 2 and record.extra["trained_stages"]["last-2"] == ["layer3", "layer4"]

    # The val score is the chosen candidate's best epoch; the refit ran each phase for its chosen length.
    curve = record.extra["curve"]
    chosen = [e["val_score"] for e in curve if e["stage"] == "select" and e["phase"] == phases[-1]
              and e["candidate_lr"] == h["lr"]]
    assert record.val_score == max(chosen) and chosen.index(max(chosen)) + 1 == h["epochs"]
    for entry in h["phases"]:
        refit = [e for e in curve if e["stage"] == "refit" and e["phase"] == entry["phase"]]
        assert len(refit) == (1 if "C" in entry else entry["epochs"])
    assert all(np.isfinite(e["train_loss"]) for e in curve if "train_loss" in e)  # no candidate diverged

    # Weights moved where the mode trains them, and nowhere else.
    before, after = pristine_net(result.net.head.out_features).state_dict(), result.net.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert {"head.weight", "head.bias"} <= moved
    if mode == "last-k":
        assert {k for k in moved if k.startswith("backbone.")} and \
            all(k.startswith(("head.", "backbone.model.layer3.", "backbone.model.layer4.")) for k in moved)
    else:
        assert "backbone.model.conv1.0.weight" in moved  # the stem trained too
    if mode.startswith("lp-ft"):  # lp-ft keeps the pretrained batch-norm statistics by default
        assert not any(k.endswith(("running_mean", "running_var")) for k in moved)

    # The recorded predictions are the refitted model's, and the score is their accuracy on the real test labels.
    test = task.split("test")
    labels, predictions = np.asarray(test.labels), np.asarray(record.test_predictions)
    assert record.test_labels == labels.tolist() and len(predictions) == 60
    assert record.score == pytest.approx(100.0 * np.mean(predictions == labels), abs=1e-9)
    mine, margin = independent_test_predictions(result.net, test)
    clear = margin > 1e-3  # near-ties may flip with the summation order of another CPU
    assert clear.sum() >= 50 and np.array_equal(mine[clear], predictions[clear])
    assert record.extra["selection"]["resumed"] is False
    assert (tmp_path / "run" / record.extra["selection"]["file"]).is_file()


def test_a_failure_in_the_refit_keeps_the_selection_and_the_rerun_does_not_sweep_again(tiny, tmp_path, monkeypatch,
                                                                                       captured):
    cfg = run_config(tiny, tmp_path)
    sgd = select_module.SOLVERS["sgd"]

    def refit_fails(*_):
        raise RuntimeError("injected failure in the refit")

    monkeypatch.setitem(select_module.SOLVERS, "sgd", select_module._Solver(sgd.select, refit_fails))
    with pytest.raises(RuntimeError, match="injected failure in the refit"):
        evaluate(cfg)
    assert not list((tmp_path / "run" / "records").rglob("*.json"))  # no record: the job did not finish
    (saved_file,) = (tmp_path / "run" / "finetune-selections").rglob("*.json")
    saved = json.loads(saved_file.read_text())
    assert [c["phase"] for c in saved["choices"]] == ["finetune"] and saved["state_file"] is None
    swept = [e for e in saved["curve"] if e["stage"] == "select"]
    assert {e["candidate_lr"] for e in swept} == {0.2, 0.05}

    def no_sweep(*_):
        raise AssertionError("the re-run swept again instead of reading the saved selection")

    monkeypatch.setitem(select_module.SOLVERS, "sgd", select_module._Solver(no_sweep, sgd.refit))
    (resumed,) = evaluate(cfg)
    choice = saved["choices"][0]
    assert (resumed.hyperparameters["lr"], resumed.hyperparameters["epochs"]) == (choice["lr"], choice["epochs"])
    assert resumed.val_score == choice["val_score"] and resumed.extra["selection"]["resumed"] is True
    assert [e for e in resumed.extra["curve"] if e["stage"] == "select"] == swept
    assert resumed.timings["select_s"] == pytest.approx(saved["select_s"], abs=1e-3)

    # The same job without the failure: the resumed record is the uninterrupted run's, prediction for prediction.
    monkeypatch.setitem(select_module.SOLVERS, "sgd", sgd)
    (straight,) = evaluate(run_config(tiny, tmp_path / "straight"))
    assert straight.hyperparameters == resumed.hyperparameters and straight.val_score == resumed.val_score
    assert straight.test_predictions == resumed.test_predictions and straight.score == resumed.score
    assert straight.extra["curve"] == resumed.extra["curve"]


def test_refit_train_keeps_the_selected_weights_and_force_selects_again(tiny, tmp_path, monkeypatch, captured,
                                                                      capsys):
    cfg = run_config(tiny, tmp_path, "finetune.refit=train", "finetune.lrs=[0.2]", "finetune.max_epochs=1")
    (first,) = evaluate(cfg)
    (json_file,) = (tmp_path / "run" / "finetune-selections").rglob("*.json")
    assert json.loads(json_file.read_text())["state_file"] == json_file.with_suffix(".safetensors").name
    (record_file,) = (tmp_path / "run" / "records").rglob("*.json")
    record_file.unlink()  # as if the run had died in the test prediction, after selection

    def no_sweep(*_):
        raise AssertionError("the re-run swept again instead of reading the saved selection")

    sgd = select_module.SOLVERS["sgd"]
    monkeypatch.setitem(select_module.SOLVERS, "sgd", select_module._Solver(no_sweep, sgd.refit))
    (again,) = evaluate(cfg)
    assert again.extra["selection"]["resumed"] is True and again.test_predictions == first.test_predictions
    a, b = captured[0].net.state_dict(), captured[1].net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the saved weights are the selected model, bit for bit

    # --force selects again although the file is there and sound; a damaged file is named on stderr and ignored.
    with pytest.raises(AssertionError, match="swept again"):
        evaluate(run_config(tiny, tmp_path, "finetune.refit=train", "finetune.lrs=[0.2]", "finetune.max_epochs=1",
                            "force=true"))
    assert SavedSelection(json_file.parent, json_file.stem).load(with_state=True) is not None
    capsys.readouterr()
    json_file.write_text("{not json")
    assert SavedSelection(json_file.parent, json_file.stem).load(with_state=True) is None
    assert "ignoring the saved fine-tuning selection" in capsys.readouterr().err


def test_fine_tuning_hands_back_the_callers_deterministic_mode(tiny, digits, monkeypatch):
    saved = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    ft = tiny.config("finetune.lrs=[0.2]", "finetune.max_epochs=1", "finetune.mode=lp-ft",
                     "finetune.lp_head=sgd", "finetune.lp_lrs=[0.5]", "finetune.lp_max_epochs=1").finetune
    assert ft.deterministic is True  # the default: Lightning switches deterministic algorithms on for every fit
    after_each_fit = []
    real_fit = select_module.fit_phase

    def observed_fit(*args, **kwargs):
        module = real_fit(*args, **kwargs)
        after_each_fit.append(torch.are_deterministic_algorithms_enabled())
        return module

    monkeypatch.setattr(select_module, "fit_phase", observed_fit)
    try:
        torch.use_deterministic_algorithms(False)
        select_module.finetune(create_backbone(BACKBONE, input_size=32), digits.train, digits.val, 10,
                               Metric.TOP1, ft, seed=0)
        assert after_each_fit == [False] * 4  # head and fine-tuning phases, selection and refit: each handed back
        torch.use_deterministic_algorithms(True, warn_only=True)  # Lightning would leave warn_only=False
        ft = tiny.config("finetune.lrs=[0.2]", "finetune.max_epochs=1", "finetune.refit=train").finetune
        select_module.finetune(create_backbone(BACKBONE, input_size=32), digits.train, digits.val, 10,
                               Metric.TOP1, ft, seed=0)
        assert (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) \
            == (True, True)
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
