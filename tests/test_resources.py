"""unirep's own data files (task cards, presets) are found through the installed package, from any directory."""

from __future__ import annotations

from pathlib import Path

import pytest

import unirep
from unirep.cli import main
from unirep.config import load_config
from unirep.errors import ConfigError
from unirep.pipeline import RunConfig
from unirep.resources import CONFIGS_DIR, TASKS_DIR, find_config, packaged_config
from unirep.sources.compare import ComparisonConfig, resolve_preset

CHECKOUT = Path(__file__).resolve().parents[1]


def test_packaged_folders_are_the_checkouts_own():
    for packaged, folder in ((TASKS_DIR, "tasks"), (CONFIGS_DIR, "configs")):
        assert (packaged / "__init__.py").is_file()
        if Path(unirep.__file__).resolve().is_relative_to(CHECKOUT):  # an editable install: no second copy
            assert packaged.samefile(CHECKOUT / folder)
    assert (TASKS_DIR / "sklearn-digits.yaml").read_bytes() == (CHECKOUT / "tasks/sklearn-digits.yaml").read_bytes()


def test_quickstart_resolves_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    quickstart = CONFIGS_DIR / "quickstart.yaml"
    assert find_config("quickstart") == find_config("configs/quickstart.yaml") == quickstart
    cfg = load_config(RunConfig, find_config("quickstart"))
    sources = resolve_preset(cfg.sources)  # `sources: configs/sources/quickstart.yaml`, read as train_comparison does
    assert sources == CONFIGS_DIR / "sources" / "quickstart.yaml"
    assert list(load_config(ComparisonConfig, sources).compare) == ["reference", "mucale"]
    assert resolve_preset("mucale") == CONFIGS_DIR / "sources" / "mucale.yaml"
    assert find_config("muldip", folder="sources") == CONFIGS_DIR / "sources" / "muldip.yaml"
    assert packaged_config("/etc/quickstart.yaml") is None and packaged_config("configs") is None


def test_a_file_of_that_name_in_the_working_directory_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "quickstart.yaml").write_text("out: mine\n")
    assert find_config("configs/quickstart.yaml") == Path("configs/quickstart.yaml")
    assert find_config("quickstart") == CONFIGS_DIR / "quickstart.yaml"  # a bare name is unirep's own config


def test_unknown_config_name_is_one_line_naming_the_packaged_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    packaged = r"\['audio', 'eval-offline', 'finetune-offline', 'quickstart'\]"
    with pytest.raises(ConfigError, match=rf"'quickstar' not found.*{packaged}"):
        find_config("quickstar")
    assert main(["run", "quickstar"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unirep run: error: config 'quickstar' not found" in err


def test_eval_config_names_resolve_to_the_packaged_copy_outside_a_checkout(tmp_path, monkeypatch):
    from unirep.config import EvalConfig

    monkeypatch.chdir(tmp_path)
    packaged = load_config(EvalConfig, CONFIGS_DIR / "eval-offline.yaml")
    for spec in ("eval-offline", "configs/eval-offline.yaml"):  # what `unirep eval --config SPEC` passes on
        assert load_config(EvalConfig, spec) == packaged
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "eval-offline.yaml").write_text("backbones: [raw-pixels]\ntasks: [lfw-faces]\n")
    assert list(load_config(EvalConfig, "configs/eval-offline.yaml").tasks) == ["lfw-faces"]  # a local file wins
    with pytest.raises(ConfigError, match="'nope.yaml' does not exist and is not one of .*eval-offline"):
        load_config(EvalConfig, "nope.yaml")
