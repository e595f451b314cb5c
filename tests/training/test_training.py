"""The pieces source training and fine-tuning share (unirep.training): the optimiser table and its weight-decay rule,
the warm-up + cosine schedule, the per-device batch rule, cached splits, and the deterministic-mode guard."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import timm
import torch

from unirep.backbones.base import DataConfig
from unirep.errors import ConfigError
from unirep.tasks import create_task
from unirep.training.data import cache_split, device_batch_size
from unirep.training.determinism import CUBLAS_WORKSPACE, preserve_deterministic_mode
from unirep.training.optim import (
    OPTIMIZERS,
    WEIGHT_DECAY_RULE,
    OptimSettings,
    create_optimizer,
    warmup_cosine,
    weight_decay_groups,
)


def tiny_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=3)


def test_weight_decay_groups_split_every_parameter_once_by_dimension():
    model = tiny_resnet()
    params = list(model.parameters())
    groups = weight_decay_groups([{"params": params[:7], "lr": 0.1, "name": "trunk"},
                                  {"params": params[7:], "lr": 1.0, "name": "top"}], weight_decay=0.05)
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in params) and len(seen) == len(set(seen))
    for group in groups:
        assert group["lr"] == (0.1 if group["name"].startswith("trunk") else 1.0)
        one_d = {p.ndim <= 1 for p in group["params"]}
        assert one_d == ({True} if group["name"].endswith("/no-decay") else {False})
        assert group["weight_decay"] == (0.0 if group["name"].endswith("/no-decay") else 0.05)
    norms_and_biases = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} | \
        {id(m.bias) for m in model.modules() if getattr(m, "bias", None) is not None}
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert norms_and_biases <= no_decay and no_decay == {id(p) for p in params if p.ndim == 1}


@pytest.mark.parametrize("optimizer", OPTIMIZERS.list())
def test_a_step_without_gradient_decays_weights_and_leaves_norms_and_biases(optimizer):
    # Zero loss gradient: whatever moves, moves by weight decay alone (AdamW: p *= 1 - lr * wd; SGD: its momentum
    # buffer starts at the decay term wd * p, one step moves p by lr * wd * p, Nesterov adds momentum * that again).
    model = tiny_resnet()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    settings = OptimSettings(lr=0.1, momentum=0.9, weight_decay=0.5, warmup_epochs=0.0, optimizer=optimizer)
    opt = create_optimizer([{"params": list(model.parameters()), "name": "all"}], settings)
    (0.0 * sum(p.sum() for p in model.parameters())).backward()
    opt.step()
    shrink = 1 - 0.1 * 0.5 if optimizer == "adamw" else 1 - 0.1 * 0.5 * (1 + 0.9)
    for name, p in model.named_parameters():
        expected = before[name] if p.ndim <= 1 else before[name] * shrink
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7, msg=name)
    assert settings.weight_decay_rule == WEIGHT_DECAY_RULE


def test_warmup_cosine_rises_linearly_then_decays_to_zero():
    multiplier = warmup_cosine(warmup=4, total=12)
    assert [multiplier(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert multiplier(4) == 1.0 and multiplier(8) == pytest.approx(0.5) and multiplier(12) == pytest.approx(0.0)
    assert multiplier(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 8)))
    assert multiplier(50) == pytest.approx(0.0)  # past the end: stays at 0


def test_the_global_batch_is_shared_among_devices_or_refused():
    assert device_batch_size(64, 4, "finetune.batch_size") == 16
    with pytest.raises(ConfigError, match=r"data.batch_size=30 \(the global batch\) must be divisible by the 4"):
        device_batch_size(30, 4, "data.batch_size")


def test_cache_split_holds_the_eval_geometry_as_uint8():
    images = create_task("sklearn-digits").split("val").subset(np.arange(10))
    split = cache_split(images, DataConfig(input_size=24), "val")
    assert split.images.shape == (10, 3, 24, 24) and split.images.dtype == torch.uint8
    assert split.images.is_contiguous() and split.ids == list(images.ids)
    np.testing.assert_array_equal(split.labels, images.labels)


@pytest.mark.parametrize("caller", [(False, False), (True, True), (True, False)])
def test_deterministic_mode_is_handed_back_also_after_an_error(caller, monkeypatch):
    monkeypatch.delenv(CUBLAS_WORKSPACE, raising=False)
    saved = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    try:
        torch.use_deterministic_algorithms(caller[0], warn_only=caller[1])
        with pytest.raises(RuntimeError, match="inside"), preserve_deterministic_mode():
            torch.use_deterministic_algorithms(not caller[0], warn_only=not caller[1])
            torch.backends.cudnn.benchmark = not benchmark
            os.environ[CUBLAS_WORKSPACE] = ":4096:8"  # what Lightning sets with deterministic=True
            raise RuntimeError("inside")
        assert (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) \
            == caller
        assert torch.backends.cudnn.benchmark == benchmark and CUBLAS_WORKSPACE not in os.environ
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = benchmark
