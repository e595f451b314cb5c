"""Fixtures several test folders share: a headless Chromium (the pages and reports are checked in a real browser)
and a tiny CLIP tower with random weights saved as a local safetensors file (no CLIP weights ship anywhere
reachable here; a local file is the path a user with real weights takes)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_MISSING = "Chromium is not installed: apt-get install -y chromium chromium-driver (the CI installs it)"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000")

# ViT: 32 px, 8 px patches (16 patches), 2 blocks of width 64; text: 2 blocks of width 32; embeddings of 32.
TINY_CLIP_CONFIG = {"embed_dim": 32,
                    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
                    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium (selenium) with its own profile, logging the browser console."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(CHROMIUM_MISSING)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path, prefix='chromium-profile-')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Callable[..., tuple[Path, Path]]:
    """tiny_clip(name, seed, logit_scale=None, config=TINY_CLIP_CONFIG) -> (config file, weights file): an open_clip
    config registered under `name` and its seeded random weights saved as safetensors (`logit_scale`: a value other
    than the init's, so a test can tell the file's from the default)."""
    import open_clip
    from safetensors.torch import save_file

    def make(name: str, seed: int, logit_scale: float | None = None,
             config: dict = TINY_CLIP_CONFIG) -> tuple[Path, Path]:
        root = tmp_path_factory.mktemp(name)
        config_file = root / f"{name}.json"
        config_file.write_text(json.dumps(config))
        open_clip.add_model_config(config_file)
        torch.manual_seed(seed)
        model = open_clip.create_model(name, pretrained=None)
        if logit_scale is not None:
            with torch.no_grad():
                model.logit_scale.fill_(np.log(logit_scale))
        weights = root / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
        return config_file, weights

    return make
