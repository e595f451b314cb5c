"""The `prototype` / `prototype-band` protocols end to end on a tiny random CNN (real timm model, real task, real
feature cache, the eval pipeline's own path): records with the probes' schema, hyperparameters chosen on val only
(a spy on every fit and every scoring call), the test split seen once after the choice, maps cached, and one-line
refusals for backbones without spatial maps."""

from __future__ import annotations

import numpy as np
import pytest

import unirep.prototypes.protocol as protocol_module
import unirep.prototypes.train as train_module
from unirep.cli import main
from unirep.config import EvalConfig, load_config
from unirep.errors import ConfigError
from unirep.evaluate import evaluate
from unirep.results import read_record, record_path

TINY = {"layer": None, "min_rows": 4, "lrs": [0.01, 0.003], "prototypes_per_class": [1], "cost_weights": [[0.8, 0.08]],
        "prototype_dim": 8, "epochs": 1, "last_layer_steps": 5, "batch_size": 128, "faithfulness_images": 16}


def tiny_config(tmp_path, protocols, **prototype):
    # The run config's `prototype` section, as `unirep eval ... prototype.epochs=1` would set it.
    return load_config(EvalConfig, None, [f"out={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}",
                                          "max_input_size=32", "batch_size=256"],
                       backbones=["random:mobilenetv2_035"], tasks=["sklearn-digits"], protocols=protocols,
                       prototype={**TINY, **prototype})


def test_records_sit_next_to_the_probes_and_choose_on_val_only(tmp_path, monkeypatch):
    events: list[tuple[str, int]] = []
    real_fit, real_scores, real_maps = (train_module.fit_prototypes, train_module.class_scores,
                                        protocol_module.split_maps)

    def fit_spy(data, *args, **kwargs):
        events.append(("fit", len(data)))
        return real_fit(data, *args, **kwargs)

    def scores_spy(head, maps, *args, **kwargs):
        events.append(("score", len(maps)))
        return real_scores(head, maps, *args, **kwargs)

    def maps_spy(source, images, *args, **kwargs):
        events.append(("maps-unlabelled" if (np.asarray(images.labels) == -1).all() else "maps", len(images)))
        return real_maps(source, images, *args, **kwargs)

    monkeypatch.setattr(train_module, "fit_prototypes", fit_spy)
    monkeypatch.setattr(train_module, "class_scores", scores_spy)
    monkeypatch.setattr(protocol_module, "class_scores", scores_spy)
    monkeypatch.setattr(protocol_module, "split_maps", maps_spy)
    monkeypatch.setattr(protocol_module, "_MEMORY", {})
    cfg = tiny_config(tmp_path, ["prototype", "prototype-band", "knn"])
    records = {r.protocol: r for r in evaluate(cfg)}
    n_train, n_val, n_test = 897, 300, 600
    # Candidates fit on train and are scored on val only; the refit fits train+val; test comes last, once a protocol.
    first_test = next(i for i, e in enumerate(events) if e[0] == "maps-unlabelled")
    before_test = events[:first_test]
    assert [e for e in before_test if e[0] == "fit"] == [("fit", n_train)] * 2 + [("fit", n_train + n_val)]
    assert {e[1] for e in before_test if e[0] == "score"} == {n_val}
    assert sum(e == ("maps-unlabelled", n_test) for e in events) == 1  # one pass, shared by both protocols
    assert all(e[1] == n_test for e in events[first_test:first_test + 4] if e[0] == "score")
    for name in ("prototype", "prototype-band"):
        record = records[name]
        assert record.n_test == n_test and len(record.test_predictions) == n_test
        assert record.hyperparameters["layer"] == "stage2" and record.hyperparameters["map_shape"][1:] == [4, 4]
        assert record.hyperparameters["position_aware"] is (name == "prototype-band")
        sweep = record.extra["val_sweep"]
        assert len(sweep) == 2 and record.val_score == max(c["val_after_last_layer"] for c in sweep)
        assert record.hyperparameters["lr"] == max(sweep, key=lambda c: c["val_after_last_layer"])["lr"]
        for stage in ("test_before_projection", "test_after_projection", "test_after_last_layer"):
            assert 0 <= record.extra[stage] <= 100
        assert record.extra["test_after_last_layer"] == record.score
        projected = record.extra["projection"]
        assert len(projected["example_ids"]) == record.extra["prototypes"] == 10 - record.extra["pruned"]
        assert record.extra["maps_cached"] is True
        check = record.extra["faithfulness"]["summary"]  # on the first 16 unlabelled test images
        assert check["n"] == 16 and 0 <= check["logit"]["share_evidence_larger"] <= 1
        low, high = check["logit"]["share_ci95"]
        assert low <= check["logit"]["share_evidence_larger"] <= high
        path = record_path(tmp_path / "run", "random:mobilenetv2_035", "sklearn-digits", name, 0)
        assert read_record(path).score == record.score
    assert records["knn"].n_test == n_test  # the probes' records, in the same run folder


def test_a_different_test_split_changes_no_choice(tmp_path):
    # Same train/val, the test images replaced by others: the selection (sweep and choice) is the same.
    from unirep.backbones import create_backbone
    from unirep.metrics import Metric
    from unirep.protocols import SealedImages, TaskImages
    from unirep.tasks import create_task

    task = create_task("sklearn-digits")
    backbone = create_backbone("random:mobilenetv2_035", input_size=32)
    cfg = tiny_config(tmp_path, ["prototype"])
    outcomes = []
    for test_split in ("test", "val"):
        data = TaskImages(task.split("train"), task.split("val"), SealedImages(task.split(test_split)), backbone, 10)
        outcomes.append(protocol_module.PrototypeProtocol(cfg).run(data, Metric.TOP1, 0))
    def scores(outcome):  # the sweep without its timings
        return [{k: v for k, v in c.items() if not k.endswith("_s")} for c in outcome.extra["val_sweep"]]

    assert scores(outcomes[0]) == scores(outcomes[1])
    assert outcomes[0].hyperparameters == outcomes[1].hyperparameters


def test_backbones_without_spatial_maps_are_refused_in_one_line(tmp_path, capsys):
    code = main(["eval", "raw-pixels", "--tasks", "sklearn-digits", "--protocols", "prototype", "--out",
                 str(tmp_path / "run"), f"cache_dir={tmp_path / 'cache'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "needs spatial feature maps" in err[0] and "'raw-pixels'" in err[0]


def test_a_layer_without_maps_or_rows_is_one_line():
    from unirep.backbones import create_backbone
    from unirep.prototypes.maps import choose_stage

    backbone = create_backbone("random:mobilenetv2_035", input_size=32)
    with pytest.raises(ConfigError, match="no layer 'stage9' for prototype maps: valid layers are stage0"):
        choose_stage(backbone, "stage9", 7)
    with pytest.raises(ConfigError, match="no stage whose map keeps 40 rows.*raise --input-size"):
        choose_stage(backbone, None, 40)
    assert choose_stage(backbone, "blocks.4", 7) == (3, "stage3")  # timm's module name works too
    assert choose_stage(backbone, None, 4) == (2, "stage2")  # the deepest stage keeping 4 rows at 32 px
