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
    before, before_stat = path.read_text(), path.stat()
    assert json.loads(before)["timings"]["extract_cached"] is False  # the fixture's run extracted the features
    args = ["eval", "raw-pixels", "--tasks", "lfw-faces", "--protocols", "knn", "--out", str(out),
            "--cache-dir", str(cache)]
    assert main(args) == 0
    # skipped: the very same file (records are written by atomic replace, so a rewrite is a new inode)
    after_skip = path.stat()
    assert path.read_text() == before
    assert (after_skip.st_ino, after_skip.st_mtime_ns) == (before_stat.st_ino, before_stat.st_mtime_ns)
    assert main([*args, "--force"]) == 0
    forced, old = json.loads(path.read_text()), json.loads(before)
    # Recomputed, not rewritten or kept: a new file, whose features came from the cache the first run filled.
    assert path.stat().st_ino != before_stat.st_ino
    assert forced["timings"]["extract_cached"] is True
    assert forced["test_predictions"] == old["test_predictions"] and forced["score"] == old["score"]
    assert "raw-pixels" in capsys.readouterr().out  # the summary table names what was evaluated


@pytest.mark.parametrize(("argv", "message"), [
    (["eval", "mobilenetv2_100.packaged", "--tasks", "lfw-faces"], "closest: mobilenetv2_100.packaged_in1k"),
    # a bare architecture would be random weights filed under a pretrained model's name; refused before any work
    (["eval", "raw-pixels", "resnet18", "--tasks", "lfw-faces"],
     "give pretrained=True (--pretrained, timm's hub weights; needs the network once), weights=FILE (--weights FILE, "
     "a local .safetensors/.pth), or name it 'random:resnet18' for random init"),
    (["eval", "resnet18.a1_in1k", "--tasks", "lfw-faces"], "or name it 'random:resnet18.a1_in1k' for random init"),
    (["eval", "resnet18", "weights=r18.safetensors", "--tasks", "lfw-faces"],
     "'weights=r18.safetensors' is a backbone setting, not a run setting: write `--weights r18.safetensors` after"),
    (["eval", "resnet18", "--tasks", "lfw-faces", "pretrained=True"], "write `--pretrained` after the backbone's name"),
    (["eval", "resnet18", "--tasks", "lfw-faces", "layer=stage3"], "write `--layer stage3` after the backbone's name"),
    (["eval", "--layer", "stage3", "raw-pixels", "random:resnet18", "--tasks", "lfw-faces"],
     "--layer comes before any backbone name and 2 are named: put it after the backbone it belongs to"),
    (["eval", "raw-pixels", "--weights", "w.pth", "--tasks", "lfw-faces"], "'raw-pixels' does not take weights"),
    (["eval", "random:resnet18", "--label", "resnet18", "--tasks", "lfw-faces"], "has random weights but would be "
     "filed as 'resnet18'"),
    (["eval", "raw-pixels", "--tasks", "lfw-face"], "unknown task 'lfw-face': did you mean lfw-faces"),
    (["eval", "raw-pixels", "--tasks", "lfw-faces", "--protocols", "svm"], "unknown protocol 'svm'"),
    (["eval", "raw-pixels", "--tasks", "lfw-faces", "batch_size=many"], "invalid configuration"),
])
def test_bad_input_is_one_line_and_keeps_existing_records(run_dir, capsys, argv, message):
    out, cache = run_dir
    before = sorted(p.read_text() for p in (out / "records").rglob("*.json"))
    config_before = (out / "config.yaml").read_bytes()
    assert main([*argv, "--out", str(out), "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert sorted(p.read_text() for p in (out / "records").rglob("*.json")) == before
    assert (out / "config.yaml").read_bytes() == config_before  # refused before the run's config was written


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


@pytest.mark.parametrize(("argv", "expected"), [
    # each option belongs to the backbone named last before it, whatever other options sit in between
    ("resnet50 --weights r50.safetensors --layer stage3 random:resnet50 raw-pixels --input-size 16",
     [{"name": "resnet50", "weights": "r50.safetensors", "layer": "stage3"}, "random:resnet50",
      {"name": "raw-pixels", "input_size": 16}]),
    ("resnet50 --out runs/x raw-pixels --label pixels", ["resnet50", {"name": "raw-pixels", "label": "pixels"}]),
    ("a --pretrained b --weights=b.pth c", [{"name": "a", "pretrained": True}, {"name": "b", "weights": "b.pth"},
                                           "c"]),
    ("a linear.n_c=3 b --layer stage1 --init-seed -1", ["a", {"name": "b", "layer": "stage1", "seed": -1}]),
    ("a b --tasks lfw-faces --pretrained", ["a", {"name": "b", "pretrained": True}]),
    # with one backbone, anywhere
    ("--pretrained resnet50", [{"name": "resnet50", "pretrained": True}]),
    ("resnet50 --tasks lfw-faces linear.n_c=3 --weights w.pth", [{"name": "resnet50", "weights": "w.pth"}]),
])
def test_backbone_options_attach_to_the_backbone_before_them(argv, expected):
    from omegaconf import OmegaConf

    from unirep.cli import build_parser, parse_args
    from unirep.commands.evaluate import config_from_args

    words = argv.split()
    tasks = [] if "--tasks" in words else ["--tasks", "lfw-faces"]
    for command in ("eval", "score", "extract"):
        cfg = config_from_args(parse_args(build_parser(), [command, *words, *tasks]))
        assert OmegaConf.to_container(cfg.backbones) == expected, command
    if "--tasks" not in words:  # finetune's --task takes key=value overrides after the task names
        cfg = config_from_args(parse_args(build_parser(), ["finetune", *words, "--task", "lfw-faces"]))
        assert OmegaConf.to_container(cfg.backbones) == expected


def test_weights_file_layer_and_random_init_from_the_command_line(tmp_path, capsys):
    """`--weights FILE --layer NAME` reaches the records; a random backbone is filed under its random: name."""
    import timm
    import torch
    from safetensors.torch import save_file

    from unirep.fileio import sha256_file

    weights = tmp_path / "resnet10t.safetensors"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        save_file(timm.create_model("resnet10t").state_dict(), str(weights))
    out = tmp_path / "out"
    argv = ["eval", "resnet10t", "--weights", str(weights), "--layer", "stage2", "random:resnet10t",
            "--tasks", "lfw-faces", "--protocols", "knn", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
            "max_input_size=32"]
    assert main(argv) == 0
    records = {r.backbone: r for r in load_records(out)[0]}
    assert sorted(records) == ["random:resnet10t", "resnet10t@stage2"]
    from_file, random_init = records["resnet10t@stage2"], records["random:resnet10t"]
    assert from_file.backbone_identity["weights_id"] == f"sha256:{sha256_file(weights)}"
    assert from_file.backbone_identity["layer"] == "stage2" and from_file.backbone_identity["num_features"] == 128
    assert random_init.backbone_identity["weights_id"] == "random:seed=0"
    assert random_init.backbone_identity["name"] == "random:resnet10t"
    summary = capsys.readouterr().out
    assert "random:resnet10t" in summary and "resnet10t@stage2" in summary
    assert (out / "records" / "random_resnet10t").is_dir()  # slug of the random: name, still saying so


@pytest.mark.parametrize(("argv", "n_c"), [
    (["raw-pixels", "linear.n_c=3", "--tasks", "lfw-faces", "linear.n_c=5"], 5),
    (["raw-pixels", "--tasks", "lfw-faces", "linear.n_c=5", "--out", "o", "linear.n_c=3"], 3),
])
def test_later_overrides_win_as_typed(argv, n_c):
    # argparse hands key=value items over in two lists (after --tasks, and everywhere else); the order typed wins
    from unirep.cli import build_parser, parse_args
    from unirep.commands.evaluate import config_from_args

    assert config_from_args(parse_args(build_parser(), ["eval", *argv])).linear.n_c == n_c
