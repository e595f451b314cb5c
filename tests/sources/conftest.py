"""Tiny source-training runs on real data: sklearn's bundled digits (the registered `sklearn-digits` task,
897 train / 300 val images), timm's `test_*` architectures, 16 px inputs, one or two short epochs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from unirep.sources.config import load_source_config

TASK = "sklearn-digits"


def tiny_dotlist(out: Path, scheme: str, *extra: str) -> list[str]:
    return [
        f"scheme={scheme}", f"out={out}", f"data.task={TASK}", "data.train_size=200", "data.val_size=100",
        "data.input_size=16", "data.batch_size=40", "model.architecture=test_resnet",
        "optim.epochs=1", "trainer.progress_bar=false", "trainer.accelerator=cpu", *extra,
    ]


def tiny_config(out: Path, scheme: str, *extra: str):
    return load_source_config(None, tiny_dotlist(out, scheme, *extra))


@pytest.fixture(autouse=True)
def _quiet_and_single_threaded(monkeypatch):
    monkeypatch.setenv("UNIREP_QUIET", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads cost more than they give on a shared 2-core machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny():
    """`tiny.config(out, scheme, *overrides)` and `tiny.dotlist(...)`: a tiny run's config."""
    return SimpleNamespace(config=tiny_config, dotlist=tiny_dotlist)
