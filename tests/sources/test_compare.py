"""The comparison preset trains several schemes and hands them to the evaluation spine, which evaluates the
checkpoints like any other backbone (feature cache, probes, records); bf16 autocast runs on CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from unirep.backbones import create_backbone
from unirep.config import EvalConfig, backbone_specs, load_config
from unirep.errors import ConfigError
from unirep.evaluate import evaluate
from unirep.sources.compare import train_comparison
from unirep.sources.train import train_source


def test_comparison_trains_each_preset_and_the_spine_evaluates_them(tmp_path, tiny):
    overrides = [item for item in tiny.dotlist(tmp_path, "reference") if not item.startswith(("scheme=", "out="))]
    overrides += ["label_sets=[{kind: original}, {kind: random, omega: 2}]"]
    comparison = tmp_path / "compare.yaml"
    comparison.write_text(yaml.safe_dump({"compare": ["muldip", "multitask"], "out": str(tmp_path / "cmp"),
                                          "overrides": overrides, "eval": {"tasks": ["sklearn-digits"],
                                                                           "protocols": ["knn"]}}))
    (tmp_path / "muldip.yaml").write_text("scheme: muldip\n")  # presets beside the comparison file come first
    (tmp_path / "multitask.yaml").write_text("scheme: multitask\n")
    out, rows = train_comparison(comparison, ["optim.lr=0.003"])
    assert [r["preset"] for r in rows] == ["muldip", "multitask", "random-init"]
    assert [r["networks"] for r in rows] == [2, 1, 2] and [r["num_features"] for r in rows] == [192, 96, 192]
    # The control is muldip's networks untrained, even though the shared overrides set epochs.
    untrained = create_backbone(str(out / "random-init")).metadata["training"]
    assert untrained["optim"]["epochs"] == 0 and untrained["scheme"] == "muldip"
    assert json.loads((out / "comparison.json").read_text())["runs"][0]["source_val_top1"] == rows[0]["source_val_top1"]
    assert create_backbone(str(out / "muldip")).metadata["training"]["optim"]["lr"] == 0.003

    cfg = load_config(EvalConfig, out / "eval.yaml", [f"cache_dir={tmp_path / 'cache'}", "knn.ks=[1, 5]"])
    specs = backbone_specs(cfg)
    assert [s.label for s in specs] == ["source:muldip", "source:multitask", "source:random-init"]
    assert specs[0].input_size == 16
    records = evaluate(cfg)
    assert sorted(r.backbone for r in records) == ["source:muldip", "source:multitask", "source:random-init"]
    for record in records:
        assert record.task == "sklearn-digits" and 10 < record.score <= 100
        assert record.backbone_identity["class"] == "SourceCheckpointBackbone"
        assert record.backbone_identity["data_config"]["input_size"] == 16


def test_bf16_autocast_on_cpu(tmp_path, tiny):
    result = train_source(tiny.config(tmp_path, "reference", "trainer.precision=bf16-mixed"))
    (metrics,) = result.metrics.values()
    assert np.isfinite(metrics["original"]["top1"]) and result.checkpoint is not None
    assert create_backbone(str(tmp_path)).num_features == 96


def test_random_init_control_refuses_a_first_preset_that_fine_tunes(tmp_path, tiny):
    overrides = [item for item in tiny.dotlist(tmp_path, "reference") if not item.startswith(("scheme=", "out="))]
    comparison = tmp_path / "compare.yaml"
    comparison.write_text(yaml.safe_dump({"compare": ["fsft", "reference"], "out": str(tmp_path / "cmp"),
                                          "overrides": overrides}))
    with pytest.raises(ConfigError, match="list a preset without FSFT first"):
        train_comparison(comparison)
    assert not (tmp_path / "cmp").exists()  # refused before anything trained
