"""End to end on real digits: checkpoints load as backbones with identical features, FSFT's learning rates
during a real fit, resume after a kill, the CLI, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file

from unirep.backbones import create_backbone
from unirep.backbones.checkpoint import METADATA_FILE, SourceCheckpointBackbone
from unirep.cli import main
from unirep.errors import ConfigError, WeightsError
from unirep.sources import train as train_module
from unirep.sources.train import train_source
from unirep.training.optim import WEIGHT_DECAY_RULE

PRESETS = Path(__file__).resolve().parents[2] / "configs" / "sources"


def digits_batch(n: int = 12) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(n, 3, 16, 16)


@pytest.fixture(scope="module")
def muldip_run(tmp_path_factory, tiny):
    out = tmp_path_factory.mktemp("muldip")
    cfg = tiny.config(out, "muldip", "label_sets=[{kind: original}, {kind: random, omega: 3}]",
                      "model.feature_dim=24")
    return train_source(cfg)


def test_muldip_checkpoint_round_trip_gives_identical_features(muldip_run):
    result = muldip_run
    x = digits_batch()
    # Independent composition from the in-memory trained networks: L-inf per network, then concatenate.
    with torch.no_grad():
        parts = [t.network.eval().features(x) for t in result.networks]
        expected = torch.cat([p / p.abs().amax(1, keepdim=True).clamp_min(1e-12) for p in parts], dim=1)
        by_path = create_backbone(str(result.out))
        by_name = create_backbone(f"unirep:{result.out}")
        assert isinstance(by_path, SourceCheckpointBackbone) and by_path.num_features == 48
        assert torch.equal(by_path(x), expected) and torch.equal(by_name(x), expected)
        features, logits = by_path.forward_with_source_logits(x)
        assert torch.equal(features, expected)
        assert torch.equal(logits, result.networks[0].network(x)["original"]) and logits.shape == (12, 10)
    assert by_path.has_source_head and by_path.identity()["feature_norm"] == "linf"
    assert by_path.identity()["weights_id"].startswith("sha256:")


def test_checkpoint_metadata_describes_the_run(muldip_run):
    meta = json.loads((muldip_run.out / METADATA_FILE).read_text())
    assert meta["scheme"] == "muldip" and meta["architecture"] == "test_resnet"
    assert [n["name"] for n in meta["networks"]] == ["original", "random-w3"]
    assert [ls["kind"] for ls in meta["label_sets"]] == ["original", "random"]
    assert meta["networks"][1]["spec"]["heads"] == {"random-w3": 3}
    assert meta["data_config"]["input_size"] == 16 and meta["data"]["train_size"] == 200
    assert meta["training"]["optim"]["epochs"] == 1 and meta["feature_norm"] == "linf"
    assert meta["optimizer"] == {"lr": 0.002, "momentum": 0.9, "weight_decay": 0.05, "warmup_epochs": 0.5,
                                 "label_smoothing": 0.0, "trunk_lr_factor": 1.0, "optimizer": "adamw",
                                 "weight_decay_rule": WEIGHT_DECAY_RULE}
    split = json.loads((muldip_run.out / "source-split.json").read_text())
    assert len(split["train_ids"]) == 200 and len(split["val_ids"]) == 100
    assert not set(split["train_ids"]) & set(split["val_ids"])
    assert meta["source_split"]["task_manifest"]["task"] == "sklearn-digits"
    for heads in meta["source_metrics"].values():
        for metrics in heads.values():
            assert 0 <= metrics["top1"] <= 100 and metrics["n"] == 100
    assert meta["source_metrics"] == muldip_run.metrics
    tensors = load_file(str(muldip_run.out / "weights.safetensors"))
    assert {k.split(".")[0] for k in tensors} == {"original", "random-w3"}
    assert (muldip_run.out / "config.yaml").is_file()
    assert (muldip_run.out / "nets" / "original" / "base" / "logs" / "version_0" / "metrics.csv").is_file()


def test_checkpoint_with_changed_weights_is_refused(muldip_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(muldip_run.out, copy, ignore=shutil.ignore_patterns("nets"))
    (copy / "weights.safetensors").write_bytes(b"broken")
    with pytest.raises(WeightsError, match="does not match its metadata") as exc:
        create_backbone(str(copy))
    assert "\n" not in str(exc.value)
    with pytest.raises(WeightsError, match="not a finished unirep checkpoint"):
        create_backbone(f"unirep:{tmp_path / 'nothing'}")


class LearningRates(Callback):
    """Records every param group's name -> (lr, weight decay, 1-d parameters only) at each training step."""

    def __init__(self):
        self.seen: list[dict[str, tuple[float, float, bool]]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append({g["name"]: (g["lr"], g["weight_decay"], all(p.ndim == 1 for p in g["params"]))
                          for g in trainer.optimizers[0].param_groups})


def test_fsft_dr_retrains_the_last_two_layers_at_ten_times_the_trunks_rate(tmp_path, tiny):
    rates = LearningRates()
    cfg = tiny.config(tmp_path, "fsft-dr", "model.feature_dim=32", "fsft.epochs=1", "fsft.dr_divisor=4")
    result = train_source(cfg, callbacks=[rates])
    base_steps = 5  # 200 images / batch 40, one epoch
    # Weights decay at optim.weight_decay, 1-d parameters (biases, norms) not at all: unirep.training.optim.
    for step in rates.seen[:base_steps]:
        assert {k: v[1:] for k, v in step.items()} == {"all": (0.05, False), "all/no-decay": (0.0, True)}
    fsft = rates.seen[base_steps:]
    groups = {"earlier-layers": (0.05, False), "earlier-layers/no-decay": (0.0, True),
              "last-two-layers": (0.05, False), "last-two-layers/no-decay": (0.0, True)}
    assert len(fsft) == 5 and all({k: v[1:] for k, v in step.items()} == groups for step in fsft)
    for step in fsft:
        top_lr = step["last-two-layers"][0]
        assert step["last-two-layers/no-decay"][0] == top_lr and top_lr > 0
        for trunk in ("earlier-layers", "earlier-layers/no-decay"):
            assert step[trunk][0] == pytest.approx(0.1 * top_lr)
    (trained,) = result.networks
    assert trained.network.feature_dim == 8 and set(trained.seconds) == {"base", "fsft"}
    backbone = create_backbone(str(result.out))
    assert backbone.num_features == 8 and backbone.feature_norm == "none"
    with torch.no_grad():
        assert torch.equal(backbone(digits_batch()), trained.network.eval().features(digits_batch()))


class KillAtEpoch(Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated kill")


def test_killed_run_resumes_from_last_checkpoint_and_matches_an_uninterrupted_run(tmp_path, tiny):
    extra = ("optim.epochs=2", "data.train_size=80", "model.feature_dim=16")
    straight = train_source(tiny.config(tmp_path / "straight", "reference", *extra))
    killed_cfg = tiny.config(tmp_path / "killed", "reference", *extra)
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_source(killed_cfg, callbacks=[KillAtEpoch(1)])
    last = tmp_path / "killed" / "nets" / "original" / "base" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)  # our checkpoints pass the safe loader
    assert saved["epoch"] == 0 and not (tmp_path / "killed" / METADATA_FILE).exists()
    resumed = train_source(killed_cfg)
    a, b = straight.networks[0].network.state_dict(), resumed.networks[0].network.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 1
    # Other settings in the same folder are refused instead of loading a mismatched checkpoint.
    with pytest.raises(ConfigError, match="holds a run with other settings"):
        train_source(tiny.config(tmp_path / "killed", "reference", *extra, "optim.lr=0.01"))


def test_a_finished_run_is_returned_from_its_checkpoint_without_training(tmp_path, tiny, monkeypatch):
    args = (tmp_path / "run", "reference", "model.feature_dim=16")
    saved = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:  # trainer.deterministic=true: Lightning switches to (True, warn_only=False); the caller gets its own back
        torch.use_deterministic_algorithms(True, warn_only=True)
        first = train_source(tiny.config(*args))
        assert (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled()) == (True, True)
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    metadata = (tmp_path / "run" / METADATA_FILE).read_bytes()

    def no_training(*_, **__):
        raise AssertionError("a finished run must not be trained or restored again")

    monkeypatch.setattr(train_module, "fit_stage", no_training)
    again = train_source(tiny.config(*args))
    assert again.metrics == first.metrics and again.seconds == pytest.approx(first.seconds, abs=0.01)
    a, b = first.networks[0].network.state_dict(), again.networks[0].network.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "run" / METADATA_FILE).read_bytes() == metadata  # recorded time and metrics kept
    # Other settings in the same folder are not that finished run: they go on to training, which refuses them.
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="holds a run with other settings"):
        train_source(tiny.config(*args, "optim.lr=0.01"))


def test_cli_trains_a_multitask_network_and_reports(tmp_path, capsys, tiny):
    code = main(["train-source", str(PRESETS / "multitask.yaml"),
                 *tiny.dotlist(tmp_path, "multitask", "label_sets=[{kind: original}, {kind: random, omega: 2}]")])
    assert code == 0
    out = capsys.readouterr().out
    assert "joint / original" in out and "joint / random-w2" in out and f"unirep eval {tmp_path}" in out
    backbone = create_backbone(str(tmp_path))
    assert backbone.num_features == 96 and len(backbone.networks) == 1  # test_resnet's 96 features, one trunk
    assert backbone.feature_norm == "none"


@pytest.mark.parametrize("override, message", [
    ("model.architecture=resnet181", "model.architecture 'resnet181' is not a timm model: did you mean resnet18"),
    ("scheme=mudlip", "unknown scheme 'mudlip': did you mean muldip"),
    ("label_sets=[{kind: original}, {kind: kmeans, omega: 1}]", "omega=1 must be >= 2 and < 10"),
    ("data.train_size=5", "have no example in the train split"),
    ("optim.epochs=two", "invalid configuration"),
    ("fsft.enabled=true", "FSFT composes with one-network-per-label-set schemes"),
    ("optim.optimizer=adam", "optim.optimizer must be one of ['adamw', 'sgd']"),
])
def test_bad_input_is_one_clear_line_from_the_cli(tmp_path, capsys, tiny, override, message):
    scheme = "reference" if "kmeans" not in override and "fsft" not in override else "muldip"
    scheme = "multitask" if "fsft" in override else scheme
    extra = ["label_sets=[{kind: original}, {kind: random, omega: 2}]"] if scheme == "multitask" else []
    code = main(["train-source", str(PRESETS / "reference.yaml"), *tiny.dotlist(tmp_path, scheme, *extra), override])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert err.startswith("unirep train-source: error:")
