"""Estimators as evaluation protocols, end to end on a real task (lfw-faces: 100 train / 40 val / 60 test) with
real backbones: records through `evaluate`, the feature cache shared with the linear probe, LEEP/NCE skipped on
backbones without a source head, and the `unirep score` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import stats
from scipy.special import softmax
from sklearn.metrics import mutual_info_score

from unirep.cli import main
from unirep.config import EvalConfig, load_config
from unirep.estimators import create_estimator, list_estimators
from unirep.evaluate import build_backbone, evaluate, extraction_settings
from unirep.features import FeatureCache
from unirep.protocols import create_protocol
from unirep.results import read_record, record_path
from unirep.tasks import create_task

TASK = "lfw-faces"
RAW = {"name": "raw-pixels", "input_size": 8}
RANDOM = {"name": "random:resnet10t", "input_size": 32}
PACKAGED = {"name": "mobilenetv2_100.packaged_in1k", "input_size": 32}
FEATURE_ESTIMATORS = ["hscore", "hscore-shrinkage", "logme", "nleep"]


def config(out: Path, cache: Path, backbones: list, protocols: list[str], *extra: str):
    return load_config(EvalConfig, dotlist=[f"out={out}", f"cache_dir={cache}", f"tasks=[{TASK}]",
                                            f"protocols=[{','.join(protocols)}]", "linear.n_c=5", *extra],
                       backbones=backbones)


def cache_entries(cache: Path) -> int:
    return len(list(cache.rglob("*.npz")))


def cached_splits(cache: Path, backbone_entry: dict, with_logits: bool = False) -> dict:
    cfg = load_config(EvalConfig, dotlist=[f"cache_dir={cache}", f"tasks=[{TASK}]"], backbones=[backbone_entry])
    from unirep.config import backbone_specs

    backbone = build_backbone(backbone_specs(cfg)[0], cfg)
    task = create_task(TASK)
    return {s: FeatureCache(cache).get_or_extract(backbone, task.manifest, s, task.split(s), extraction_settings(cfg),
                                                  with_logits) for s in ("train", "val", "test")}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """linear first (three backbones), then the feature estimators on the same out/cache for two of them: the
    estimators must reuse the probe's features."""
    root = tmp_path_factory.mktemp("estimator-protocol")
    out, cache = root / "run", root / "cache"
    linear = evaluate(config(out, cache, [RAW, RANDOM, PACKAGED], ["linear"]))
    entries_after_linear = cache_entries(cache)
    records = evaluate(config(out, cache, [RAW, RANDOM], FEATURE_ESTIMATORS))
    return {"out": out, "cache": cache, "linear": linear, "records": records,
            "entries_after_linear": entries_after_linear, "entries_after_estimators": cache_entries(cache)}


def test_estimator_records_reuse_the_linear_probes_features(run):
    assert run["entries_after_linear"] == 3 * 3  # three backbones x train/val/test
    assert run["entries_after_estimators"] == run["entries_after_linear"]
    assert len(run["records"]) == 2 * len(FEATURE_ESTIMATORS)
    assert all(r.timings["extract_cached"] is True for r in run["records"])
    assert all(r.timings["extract_cached"] is False for r in run["linear"])


def test_records_score_train_plus_val_and_never_test(run):
    task = create_task(TASK)
    # Every estimator on raw pixels; the cheap ones on the 512-d random network too (the test's time budget).
    for entry, names in ((RAW, FEATURE_ESTIMATORS), (RANDOM, ["logme", "nleep"])):
        splits = cached_splits(run["cache"], entry)
        X = np.concatenate([splits["train"].features, splits["val"].features])
        y = np.concatenate([splits["train"].labels, splits["val"].labels])
        for name in names:
            record = read_record(record_path(run["out"], entry["name"], TASK, name, 0))
            identity = create_estimator(name, **({"seed": 0} if name == "nleep" else {})).identity()
            assert record.metric == record.protocol == name
            assert record.score == pytest.approx(create_estimator(name).score(X, y), rel=1e-9)
            assert record.val_score is None and record.test_predictions is None and record.test_labels is None
            assert record.hyperparameters == identity and record.extra["estimator"] == identity
            assert record.extra["n_scored"] == len(y) == task.manifest.counts["train"] + task.manifest.counts["val"]
            assert (record.n_train, record.n_val, record.n_test) == (100, 40, 60)


def test_nleep_gets_the_run_seed():
    protocol = create_protocol("nleep", OmegaConf.structured(EvalConfig(backbones=[], tasks=[])))
    assert protocol.build_estimator(3).seed == 3
    assert not protocol.needs_source_logits and create_protocol("leep", protocol.cfg).needs_source_logits


def test_source_head_estimators_run_on_a_packaged_backbone_and_are_skipped_without_a_head(tmp_path, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache"
    records = evaluate(config(out, cache, [RAW, PACKAGED], ["linear", "leep", "nce", "logme"]))
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if line.startswith("unirep: skipped")]
    assert len(skipped) == 2 and all("raw-pixels/lfw-faces" in line and "no source classification head" in line
                                     for line in skipped)
    by_key = {(r.backbone, r.protocol): r for r in records}
    assert set(by_key) == {("raw-pixels", "linear"), ("raw-pixels", "logme"), (PACKAGED["name"], "linear"),
                           (PACKAGED["name"], "logme"), (PACKAGED["name"], "leep"), (PACKAGED["name"], "nce")}
    assert not record_path(out, "raw-pixels", TASK, "leep", 0).exists()
    # One forward pass per split and backbone: logits were extracted with the features the probe used.
    assert cache_entries(cache) == 2 * 3

    splits = cached_splits(cache, PACKAGED, with_logits=True)
    logits = np.concatenate([splits["train"].source_logits, splits["val"].source_logits]).astype(np.float64)
    y = np.concatenate([splits["train"].labels, splits["val"].labels])
    assert logits.shape == (140, 1000)
    # LEEP (Nguyen et al. 2020) written out: theta = softmax, P(y|z) = sum_i theta_i(z)[y_i=y] / sum_i theta_i(z).
    theta = softmax(logits, axis=1)
    joint = np.stack([theta[y == c].sum(axis=0) for c in np.unique(y)])
    conditional = joint / joint.sum(axis=0)
    leep = np.mean(np.log([theta[i] @ conditional[list(np.unique(y)).index(y[i])] for i in range(len(y))]))
    assert by_key[(PACKAGED["name"], "leep")].score == pytest.approx(leep, rel=1e-9)
    # NCE = -H(Y|Z) = I(Y; Z) - H(Y), with z the argmax source class.
    z = logits.argmax(axis=1)
    nce = mutual_info_score(y, z) - stats.entropy(np.bincount(y))
    assert by_key[(PACKAGED["name"], "nce")].score == pytest.approx(nce, abs=1e-12)

    # A second run finds every record and skips the head-less jobs again without writing anything for them.
    again = evaluate(config(out, cache, [RAW, PACKAGED], ["linear", "leep", "nce", "logme"]))
    assert len(again) == len(records) and "skipped leep on raw-pixels" in capsys.readouterr().err


def test_score_command_prints_tables_and_agreement_with_the_linear_probe(run, tmp_path, capsys):
    out, cache = run["out"], run["cache"]
    # The backbones with their per-backbone input sizes, as a YAML config (names alone would keep native sizes).
    yaml = tmp_path / "score.yaml"
    yaml.write_text(OmegaConf.to_yaml(OmegaConf.create({"backbones": [RAW, RANDOM, PACKAGED]})))
    assert main(["score", "--config", str(yaml), "--tasks", TASK, "--estimators", "logme,nleep", "--out", str(out),
                 "--cache-dir", str(cache)]) == 0
    printed = capsys.readouterr().out
    assert "logme (higher = should transfer better)" in printed and "agreement with linear" in printed
    assert read_record(record_path(out, PACKAGED["name"], TASK, "logme", 0)).timings["extract_cached"] is True

    linear = {r.backbone: r.score for r in (read_record(record_path(out, b["name"], TASK, "linear", 0))
                                            for b in (RAW, RANDOM, PACKAGED))}
    for estimator in ("logme", "nleep"):
        values = {b: read_record(record_path(out, b, TASK, estimator, 0)).score for b in linear}
        order = sorted(linear)
        tau = stats.kendalltau([values[b] for b in order], [linear[b] for b in order]).statistic
        weighted = stats.weightedtau([values[b] for b in order], [linear[b] for b in order]).statistic
        agreement = printed.split("agreement with linear")[1]
        row = next(line for line in agreement.splitlines() if line.startswith(estimator + " "))
        assert f"{tau:+.2f} / {weighted:+.2f} (n=3)" in row


def test_score_command_errors_are_one_line(tmp_path, capsys):
    code = main(["score", "raw-pixels", "--tasks", TASK, "--estimators", "logmee", "--out", str(tmp_path / "o"),
                 "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "logme" in err
    assert not (tmp_path / "o").exists()


def test_every_estimator_is_a_protocol():
    from unirep.protocols import PROTOCOLS, _import_protocols

    _import_protocols()
    assert set(list_estimators()) <= set(PROTOCOLS.list())
