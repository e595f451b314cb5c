"""Tiny fine-tuning runs on real data: sklearn's bundled digits and scikit-image's LFW crops (registered tasks),
timm's `test_*` architectures with seeded random weights, 32 px inputs, one to three short epochs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from unirep.config import EvalConfig, load_config
from unirep.tasks import create_task

# Settings every tiny run shares; a test adds its own overrides after these.
TINY = ("finetune.lrs=[0.2,0.05]", "finetune.max_epochs=2", "finetune.patience=1", "finetune.batch_size=32",
        "finetune.precision=32-true", "finetune.accelerator=cpu", "max_input_size=32")


def tiny_config(*overrides: str, out: str = "unused"):
    return load_config(EvalConfig, dotlist=["backbones=[random:test_resnet]", "tasks=[sklearn-digits]",
                                            f"out={out}", *TINY, *overrides])


@pytest.fixture(autouse=True)
def _quiet_and_single_threaded(monkeypatch):
    monkeypatch.setenv("UNIREP_QUIET", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads cost more than they give on a shared 2-core machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny():
    """`tiny.config(*overrides, out=...)`: an EvalConfig for a tiny fine-tuning run."""
    return SimpleNamespace(config=tiny_config)


@pytest.fixture(scope="session")
def digits():
    """Small slices of sklearn-digits' published splits: 192 train, 96 val, 96 test images."""
    task = create_task("sklearn-digits")
    return SimpleNamespace(train=task.split("train").subset(np.arange(192)),
                           val=task.split("val").subset(np.arange(96)),
                           test=task.split("test").subset(np.arange(96)), num_classes=10)
