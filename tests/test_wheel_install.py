"""unirep as `pip install unirep` gives it: a regular wheel, installed into a fresh virtualenv, run from a directory
outside the checkout. Task cards, manifests, hierarchies, presets and templates must come from inside the wheel.

The venv reuses this test environment's dependencies through a .pth file (a venv made with
--system-site-packages would see the base interpreter's packages, not this .venv's), so nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]
BUNDLED = {"tasks": "unirep/_bundled/tasks", "configs": "unirep/_bundled/configs"}
# What a wheel build reads; copied so the build's scratch folders (build/, *.egg-info) never land in the checkout.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "unirep", "tasks", "configs")
# tests/sources/conftest.py's tiny run: 200 digits at 16 px, timm's test_resnet, one epoch.
TINY_SOURCE = ["data.task=sklearn-digits", "data.train_size=200", "data.val_size=100", "data.input_size=16",
               "data.batch_size=50", "model.architecture=test_resnet", "optim.epochs=1", "trainer.progress_bar=false",
               "trainer.accelerator=cpu"]
TIMEOUT_S = 300


def checkout_files(folder: str) -> list[Path]:
    """Every data file of a top-level folder, relative to it (the package marker and bytecode excluded)."""
    root = CHECKOUT / folder
    return sorted(p.relative_to(root) for p in root.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.name != "__init__.py")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        src = CHECKOUT / name
        if src.is_dir():
            shutil.copytree(src, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, source / name)
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(dist), str(source)], cwd=source)
    (built,) = dist.glob("unirep-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", str(root)], cwd=root)
    python = root / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    cwd=root).strip())
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "unirep-test-dependencies.pth").write_text("\n".join(deps) + "\n")
    # --ignore-installed: the .venv's own (editable) unirep is visible through the .pth file; pip must neither
    # skip the wheel because of it nor try to uninstall it.
    run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)],
        cwd=root)
    return root


def run(argv: list[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(UNIREP_QUIET="1", HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_wheel_carries_every_task_and_config_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, packaged in BUNDLED.items():
        files = checkout_files(folder)
        assert files, f"nothing under {folder}/"
        missing = [str(p) for p in files if f"{packaged}/{p.as_posix()}" not in names]
        assert not missing, f"{folder}/ files left out of the wheel (add their pattern to setup.py): {missing}"
        assert f"{packaged}/__init__.py" in names
    templates = sorted((CHECKOUT / "unirep" / "leaderboard" / "templates").glob("*.j2"))
    assert templates and all(f"unirep/leaderboard/templates/{t.name}" in names for t in templates)
    assert not [n for n in names if n.startswith(("tasks/", "configs/"))]  # no top-level data folders in site-packages


def test_installed_wheel_runs_from_outside_the_checkout(venv, tmp_path):
    bin_dir = venv / "bin"
    where = run([str(bin_dir / "python"), "-c",
                 "import unirep, unirep.resources as r; print(unirep.__file__, r.TASKS_DIR, r.CONFIGS_DIR)"],
                cwd=tmp_path).split()
    for path in where:  # the installed copy runs, never the checkout
        assert Path(path).resolve().is_relative_to(venv.resolve()), where

    listed = run([str(bin_dir / "unirep"), "list", "tasks"], cwd=tmp_path).split()
    # The checkout's own listing, in a fresh process: this test process's registry also holds the custom cards
    # that earlier tests registered.
    expected = run([sys.executable, "-m", "unirep.cli", "list", "tasks"], cwd=tmp_path).split()
    assert {"actions40", "sklearn-digits", "fashion-mnist"} <= set(expected)
    assert set(expected) <= set(listed), sorted(set(expected) - set(listed))

    # kNN: the cheapest probe (the linear probe's sweep would double this test's time and is tested elsewhere).
    run([str(bin_dir / "unirep"), "eval", "raw-pixels", "--tasks", "sklearn-digits", "--protocols", "knn",
         "--out", "evals", "--cache-dir", "cache"], cwd=tmp_path)
    record = json.loads((tmp_path / "evals/records/raw-pixels/sklearn-digits/knn-seed0.json").read_text())
    published = json.loads((CHECKOUT / "tasks/manifests/sklearn-digits.json").read_text())
    assert record["split_manifest"]["digest"] == published["digest"]  # the packaged manifest is the checkout's
    predictions, labels = record["test_predictions"], record["test_labels"]
    assert len(labels) == 600
    assert record["score"] == pytest.approx(100 * sum(p == t for p, t in zip(predictions, labels)) / len(labels))
    assert 85 < record["score"] <= 100  # raw pixels on 8x8 digits: 96 % with kNN or the linear probe

    # A packaged preset by name (configs/sources/reference.yaml inside the wheel).
    out = run([str(bin_dir / "unirep"), "train-source", "reference", "out=source", *TINY_SOURCE], cwd=tmp_path)
    assert "source val top-1" in out
    meta = json.loads((tmp_path / "source/unirep-checkpoint.json").read_text())
    assert meta["scheme"] == "reference" and len(meta["label_sets"][0]["groups"]) == 10  # the 10 digit classes
    assert (tmp_path / "source/weights.safetensors").stat().st_size > 0
