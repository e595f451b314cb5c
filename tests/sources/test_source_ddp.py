"""Lightning DDP on CPU (gloo): a 2-process MulDiP run through the CLI equals a 1-process run with the same
global batch and seed. GroupNorm keeps the networks free of per-device batch statistics, and augmentation is
keyed by example, so the two runs see the same global batches and must reach the same weights.

Both runs train in float64 (`trainer.precision=64-true`): DDP sums each gradient over two ranks in another order
than one process sums it over the whole batch, and in float32 that ~1e-7 noise, amplified by AdamW's per-weight
normalisation over 10 steps, reached 5.6e-4 on some CPUs (AMD EPYC, torch 2.14). In float64 the same growth stays
near 1e-12, so the comparison can be ~1e5 times tighter than before and still mean "the same network"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from unirep.backbones import create_backbone
from unirep.backbones.checkpoint import WEIGHTS_FILE
from unirep.backbones.weights import read_state_dict
from unirep.sources.networks import NetworkSpec, SourceNetwork
from unirep.sources.train import train_source

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ("label_sets=[{kind: original}, {kind: random, omega: 3}]", "model.architecture=test_efficientnet_gn",
            "model.feature_dim=16", "data.train_size=160", "data.batch_size=32", "optim.epochs=2",
            "trainer.precision=64-true")


def test_two_process_ddp_fit_matches_a_single_process_fit(tmp_path, tiny):
    ddp_out = tmp_path / "ddp"
    command = [sys.executable, "-m", "unirep.cli", "train-source", str(ROOT / "configs" / "sources" / "muldip.yaml"),
               *tiny.dotlist(ddp_out, "muldip", *SETTINGS), "trainer.strategy=ddp", "trainer.devices=2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr + done.stdout

    single = train_source(tiny.config(tmp_path / "single", "muldip", *SETTINGS))
    # The checkpoints hold the float64 weights as trained: equal far beyond float32 resolution.
    ddp_weights, single_weights = read_state_dict(ddp_out / WEIGHTS_FILE), read_state_dict(single.out / WEIGHTS_FILE)
    assert ddp_weights.keys() == single_weights.keys()
    for key, value in single_weights.items():
        assert value.dtype == torch.float64, key
        torch.testing.assert_close(ddp_weights[key], value, rtol=1e-9, atol=1e-10, msg=key)
    ddp_backbone = create_backbone(str(ddp_out))
    single_backbone = create_backbone(str(single.out))
    assert ddp_backbone.num_features == single_backbone.num_features == 32
    ddp_state, single_state = ddp_backbone.state_dict(), single_backbone.state_dict()
    assert ddp_state.keys() == single_state.keys()
    for key, value in single_state.items():
        torch.testing.assert_close(ddp_state[key], value, rtol=1e-6, atol=1e-7, msg=key)  # float32: one rounding
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():  # features peak at 1 (L-inf); float32 forward passes of the float32-rounded weights
        torch.testing.assert_close(ddp_backbone(x), single_backbone(x), rtol=1e-5, atol=1e-5)
    # The runs really trained: the weights moved far beyond the tolerance from the seeded initialisation.
    torch.manual_seed(0)
    init = SourceNetwork(NetworkSpec("test_efficientnet_gn", {"original": 10}, {}, True, 16)).state_dict()
    moved = max((init[k] - single_backbone.networks[0].state_dict()[k]).abs().max().item() for k in init)
    assert moved > 1e-2
