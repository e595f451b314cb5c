"""UnitStatsCallback in a real (tiny) source-training run: what it logs through the run's CSVLogger per epoch equals
dead shares and noise scores recomputed independently from the trained checkpoint, and measuring leaves the
trained weights bit-identical."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from unirep.backbones.base import DataConfig
from unirep.backbones.checkpoint import create_source_checkpoint
from unirep.sources.config import load_source_config
from unirep.sources.data import subset
from unirep.sources.train import train_source
from unirep.tasks import create_task
from unirep.training.data import cache_split
from unirep.training.unit_stats_callback import UnitStatsCallback


def tiny_run(out: Path, *extra: str):
    cfg = load_source_config(None, [
        "scheme=reference", f"out={out}", "data.task=sklearn-digits", "data.train_size=200", "data.val_size=100",
        "data.input_size=16", "data.batch_size=40", "model.architecture=test_resnet", "optim.epochs=2",
        "optim.lr=0.02", "trainer.progress_bar=false", "trainer.accelerator=cpu", "diagnostics.images=64", *extra])
    return cfg, train_source(cfg)


def logged_rows(out: Path) -> list[dict]:
    with open(out / "nets" / "original" / "base" / "logs" / "version_0" / "metrics.csv", encoding="utf-8") as f:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def direct_dead_share(network: nn.Module, images: torch.Tensor, quantile: float) -> float:
    """Share of all ReLU channels whose map is exactly zero on >= quantile of the images, by plain hooks."""
    zero_counts: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        maps = output if output.dim() == 4 else output[:, :, None, None]
        zero_counts.append((maps.flatten(2) == 0).all(dim=2).float().mean(dim=0))

    handles = [m.register_forward_hook(hook) for m in network.modules() if isinstance(m, nn.ReLU)]
    network.eval()
    with torch.no_grad():
        network(images)
    for handle in handles:
        handle.remove()
    dead = torch.cat([(z >= quantile).float() for z in zero_counts])
    return float(dead.mean())


@pytest.fixture(autouse=True)
def _quiet_single_thread(monkeypatch):
    monkeypatch.setenv("UNIREP_QUIET", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_logged_per_epoch_unit_stats_match_the_checkpoint_and_leave_training_unchanged(tmp_path):
    cfg, result = tiny_run(tmp_path / "on")
    rows = [r for r in logged_rows(result.out) if "units/dead_share/all" in r]
    assert [int(r["epoch"]) for r in rows] == [0, 1]  # one row per epoch
    stages = {k.split("/")[-1] for r in rows for k in r if k.startswith("units/dead_share/")}
    assert {"trunk.layer1", "head", "all"} <= stages
    assert all(f"units/dormant_0.1/{s}" in rows[-1] for s in stages - {"all"})

    network = create_source_checkpoint(str(result.out)).networks[0]
    data_config = DataConfig(input_size=16, mean=tuple(cfg.data.mean), std=tuple(cfg.data.std),
                             interpolation="bilinear", crop_pct=1.0)
    val = cache_split(subset(create_task("sklearn-digits").split("val"), 100, cfg.seed, "val"), data_config, "val")
    images = data_config.normalize_batch(val.images[:64])
    assert float(rows[-1]["units/dead_share/all"]) == pytest.approx(direct_dead_share(network, images, 0.99))
    first_conv = next(m for m in network.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1))
    spectrum = torch.fft.fft2(first_conv.weight.detach().double(), s=(32, 32)).abs() ** 2
    f = torch.fft.fftfreq(32, dtype=torch.float64)
    high = (f[:, None] ** 2 + f[None, :] ** 2).sqrt() > 0.25
    scores = (spectrum[..., high].sum(dim=(1, 2)) / spectrum.sum(dim=(1, 2, 3))).numpy()
    assert float(rows[-1]["units/first_layer_noise"]) == pytest.approx(float(np.median(scores)), rel=1e-5)
    # the callback's own measure on the final network gives what was logged
    callback = UnitStatsCallback(val.images[:64], transform=data_config.normalize_batch)
    assert callback.measure(network)["units/dead_share/all"] == pytest.approx(float(rows[-1]["units/dead_share/all"]))
    with torch.no_grad():  # kill 4 channels of the first batch norm's output: its ReLU now outputs zeros there
        bn = next(m for m in network.modules() if isinstance(m, nn.BatchNorm2d))
        bn.weight[:4], bn.bias[:4] = 0.0, -1.0
    forced = callback.measure(network)["units/dead_share/all"]
    assert forced == pytest.approx(direct_dead_share(network, images, 0.99))
    assert forced > float(rows[-1]["units/dead_share/all"])

    _, without = tiny_run(tmp_path / "off", "diagnostics.unit_stats=false")
    assert not any(k.startswith("units/") for r in logged_rows(without.out) for k in r)
    trained = create_source_checkpoint(str(result.out)).networks[0]
    other = create_source_checkpoint(str(without.out)).networks[0]
    for (name, a), (_, b) in zip(trained.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # measuring changed no weight and no batch-norm statistic
