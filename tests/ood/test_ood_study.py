"""`unirep ood-study` end to end on a tiny setting: a small benchmark card built from real embedded data (scikit-learn's
digits 0-2 as ID, digits 7-9 as near OoD, texture patches as far and val OoD), timm's tiny `test_resnet` (seeded
random weights) at 32 px, one fine-tuning epoch, strategies frozen and WiSE-FT (whose endpoint, full fine-tuning, is
trained for it), two scores. Records in the fixed OoD schema, WiSE at α = 0 / 1 equal to its endpoints, a resumed run
that recomputes nothing, the tables, the bootstrap AUROC against direct resampling, and one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from unirep.cli import main
from unirep.ood.benchmarks import create_benchmark
from unirep.ood.metrics import ood_metrics
from unirep.ood.records import OodRecord, load_ood_records

CARD = {
    "name": "tiny-digits-ood",
    "id": {"task": "sklearn-digits", "classes": ["0", "1", "2"]},
    "val": {"name": "textures-val", "task": "skimage-textures", "split": "val", "count": 30},
    "near": [{"name": "held-out-digits", "task": "sklearn-digits", "split": "test", "classes": ["7", "8", "9"],
              "held_out": True, "count": 60}],
    "far": [{"name": "texture-patches", "task": "skimage-textures", "split": "test", "count": 60}],
    "counts": {},
}
BASE = "random:test_resnet"
LABELS = [f"{BASE}@frozen", *(f"{BASE}@full-seed0@wise{a}" for a in ("0", "0.5", "1", "0.5-bn"))]
SCORES = ["msp", "knn"]


def _card(folder, **changes) -> str:
    card = {**CARD, **changes}
    path = folder / f"{card['name']}.yaml"
    path.write_text(yaml.safe_dump(card), encoding="utf-8")
    card["counts"] = create_benchmark(str(path), check_counts=False).counts  # the real counts, as cards state them
    path.write_text(yaml.safe_dump(card), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("ood-study")
    card = _card(root)
    argv = ["ood-study", "configs/ood/finetune-study.yaml", f"backbones=[{BASE}]", f"benchmarks=[{card}]",
            "strategies=[frozen,wise,wise-bn]", "seeds=[0]", "wise_alphas=[0,0.5,1]", "wise_endpoints=[full]",
            f"scores=[{','.join(SCORES)}]", "max_train=60", "max_input_size=32", "finetune.max_epochs=1",
            "finetune.patience=1", "finetune.lrs=[0.05]", "finetune.batch_size=32", "finetune.accelerator=cpu",
            "linear.n_c=6", "n_boot=200", "--out", str(root / "out"), "--cache-dir", str(root / "cache")]
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread costs more than it gives on 2 shared cores
    yield root, argv
    torch.set_num_threads(before)


def test_study_writes_one_fixed_schema_record_per_network_and_score(study, capsys):
    root, argv = study
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "10 records (10 new)" in captured.out and "| msp |" in captured.out
    records = {(r.backbone, r.ood_score): r for r in load_ood_records(root / "out")}
    assert sorted(records) == sorted((label, s) for label in LABELS for s in SCORES)
    for record in records.values():
        path = next((root / "out" / "ood-records").rglob(f"*-{record.ood_score}.json"))
        assert set(json.loads(path.read_text())) == set(OodRecord.__dataclass_fields__)
        assert record.benchmark_manifest["counts"]["id/train"] == 60  # the subsample, stated in the record
        assert len(record.id_test_scores) == record.benchmark_manifest["counts"]["id/test"]
        for key, values in record.ood_test_scores.items():
            assert record.metrics["sets"][key] == pytest.approx(
                ood_metrics(np.array(record.id_test_scores), np.array(values)), abs=1e-9)
        hyper = record.classifier_hyperparameters
        assert hyper["base"] == BASE and hyper["strategy"] in ("frozen", "wise", "wise-bn")
        assert record.classifier == ("linear" if hyper["strategy"] == "frozen" else "wise-head")
    frozen, wise0, wise_half, wise1, wise_half_bn = (records[(label, "msp")] for label in LABELS)
    # α = 0 is the frozen network's backbone with its probe folded as LP-FT folds it (scales floored): the same
    # features, its own record (the head is not the frozen network's exact fold).
    assert wise0.backbone_identity == frozen.backbone_identity
    assert "record_copied_from" not in wise0.classifier_hyperparameters
    assert wise0.classifier_hyperparameters["head_fold"].startswith("standardisation scales floored")
    assert len(wise0.id_test_scores) == len(frozen.id_test_scores)
    assert "record_copied_from" not in wise1.classifier_hyperparameters  # no full-fine-tuning record to copy here
    assert wise1.backbone_identity["weights_id"].startswith("finetuned:sha256:")
    assert wise1.backbone_identity["name"] == f"{BASE}@full-seed0"
    assert wise_half.backbone_identity["weights_id"].startswith("wise:alpha=0.5:sha256:")
    assert wise_half.id_test_scores != frozen.id_test_scores != wise1.id_test_scores
    assert wise1.classifier_hyperparameters["finetune"]["epochs"] == 1
    assert wise_half_bn.backbone_identity["weights_id"].startswith("wise-bn:alpha=0.5:sha256:")
    assert wise_half_bn.classifier_hyperparameters["batchnorm"].startswith("recomputed on ID train")
    assert wise_half.classifier_hyperparameters["batchnorm"] == "interpolated"
    assert wise_half_bn.id_test_scores != wise_half.id_test_scores
    assert frozen.classifier_hyperparameters["C"] > 0
    strategies = pd.read_csv(root / "out" / "strategies.csv")
    assert sorted(set(strategies.group)) == ["frozen", "wise(full) a=0", "wise(full) a=0.5", "wise(full) a=1",
                                             "wise-bn(full) a=0.5"]
    networks = pd.read_csv(root / "out" / "networks.csv")
    assert len(networks) == 10
    for column in ("id_acc", "near_auroc", "far_auroc", "near_fpr95"):  # bootstrap CIs around the record's values
        assert ((networks[f"{column}_low"] <= networks[column] + 1e-9)
                & (networks[column] <= networks[f"{column}_high"] + 1e-9)).all()
    msp = networks[(networks.network == LABELS[0]) & (networks.score == "msp")].iloc[0]
    assert msp.near_auroc == pytest.approx(frozen.metrics["near"]["auroc"], abs=1e-3)


def test_a_second_run_resumes_without_recomputing(study, capsys):
    root, argv = study
    files = sorted((root / "out").rglob("*.json")) + sorted((root / "out" / "networks").rglob("*.safetensors"))
    assert len(files) >= 10
    stamps = {p: p.stat().st_mtime_ns for p in files}
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "10 records (0 new)" in captured.out
    assert "fine-tuning" not in captured.err  # the fine-tuned network was read back, not trained
    assert {p: p.stat().st_mtime_ns for p in files} == stamps


@pytest.mark.parametrize("extra, message", [
    (["strategies=[frozen,distill]"], "unknown fine-tuning strategy 'distill'"),
    (["wise_alphas=[0,1.5]"], "outside [0, 1]"),
    (["wise_endpoints=[frozen]"], "wise_endpoints"),
    (["seeds=[]"], "seeds"),
])
def test_bad_input_is_one_line_and_exit_code_2(study, capsys, extra, message, tmp_path):
    _, argv = study
    out = tmp_path / "never"
    assert main([*argv, *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()


def test_a_benchmark_without_a_validation_ood_set_is_refused(study, capsys, tmp_path):
    _, argv = study
    card = {k: v for k, v in CARD.items() if k != "val"}
    path = tmp_path / "no-val.yaml"
    path.write_text(yaml.safe_dump({**card, "name": "no-val"}), encoding="utf-8")
    out = tmp_path / "never"
    assert main([*argv, f"benchmarks=[{path}]", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing key(s) ['val']" in err
    assert not out.exists()



def test_the_study_runs_on_a_tiny_clip_tower(study, capsys, tmp_path, tiny_clip):
    """Full fine-tuning, LP-FT, WiSE-FT from CLIP's zero-shot head (θ_0 = the pretrained tower with the zero-shot head
    of the ID class names, WiSE-FT's own choice for CLIP) and the scores, MCM included, on a CLIP image tower
    (`clip:<config>` with a local safetensors file of random weights, the path a user with OpenAI's weights takes)."""
    _, argv = study
    config, weights = tiny_clip("unirep-study-clip", seed=0, config={
        "embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}})
    out = tmp_path / "out"
    clip = f"clip:{config}"
    backbone = f"{{name: '{clip}', weights: '{weights}', layer: unit-embedding}}"
    overrides = [f"backbones=[{backbone}]", "strategies=[zero-shot,full,lp-ft,wise]", "wise_theta_0=zero-shot",
                 "wise_alphas=[0,0.5]", "scores=[msp,mcm]", "finetune.lp_max_epochs=1", "--out", str(out)]
    assert main([*argv, *overrides]) == 0
    captured = capsys.readouterr()
    # MCM reads CLIP's zero-shot head: scored on the zero-shot network (and WiSE at α = 0, the same network),
    # skipped with a line on the fine-tuned heads.
    assert "7 records (7 new)" in captured.out and "skipped mcm on" in captured.err
    base = f"{clip}@unit-embedding"  # a backbone with a layer is filed as <name>@<layer>
    records = {(r.backbone.removeprefix(base), r.ood_score): r for r in load_ood_records(out)}
    assert sorted(records) == sorted([("@zero-shot", "msp"), ("@zero-shot", "mcm"), ("@full-seed0", "msp"),
                                      ("@lp-ft-seed0", "msp"), ("@full-seed0@wise0", "msp"),
                                      ("@full-seed0@wise0", "mcm"), ("@full-seed0@wise0.5", "msp")])
    zero_shot = records[("@zero-shot", "mcm")]
    assert zero_shot.classifier == "zero-shot" and zero_shot.classifier_hyperparameters["zero_shot"]["class_names"] \
        == ["0", "1", "2"]
    assert records[("@full-seed0@wise0", "mcm")].id_test_scores == zero_shot.id_test_scores
    assert records[("@full-seed0@wise0.5", "msp")].backbone_identity["class"] == "ClipBackbone"
    assert records[("@lp-ft-seed0", "msp")].classifier_hyperparameters["finetune"]["mode"] == "lp-ft"


def test_the_zero_shot_head_needs_a_clip_backbone_on_unit_embeddings(study, capsys, tmp_path):
    _, argv = study
    out = tmp_path / "never"
    assert main([*argv, "strategies=[zero-shot]", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "layer unit-embedding" in err and not out.exists()
