"""No process-global side effects: environment switches hold inside a `with` block and are restored after it."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest

import unirep.evaluate
from unirep.cli import main
from unirep.runtime_env import (
    ALLOW_DOWNLOAD,
    allow_downloads,
    downloads_allowed,
    preserved_environ,
    scoped_environ,
    switches,
)

ROOT = Path(__file__).resolve().parents[1]


def test_preserved_environ_undoes_what_the_block_set(monkeypatch):
    monkeypatch.setenv("UNIREP_TEST_PRESENT", "before")
    monkeypatch.delenv("UNIREP_TEST_ABSENT", raising=False)
    before = dict(os.environ)
    with preserved_environ("UNIREP_TEST_PRESENT", "UNIREP_TEST_ABSENT"):
        os.environ["UNIREP_TEST_PRESENT"] = "changed by a library"
        os.environ["UNIREP_TEST_ABSENT"] = "set by a library"
    assert dict(os.environ) == before


def test_scoped_environ_sets_unsets_and_restores_even_on_error(monkeypatch):
    monkeypatch.setenv("UNIREP_TEST_PRESENT", "before")
    monkeypatch.delenv("UNIREP_TEST_ABSENT", raising=False)
    before = dict(os.environ)
    with pytest.raises(RuntimeError), scoped_environ({"UNIREP_TEST_PRESENT": None, "UNIREP_TEST_ABSENT": "set"}):
        assert "UNIREP_TEST_PRESENT" not in os.environ and os.environ["UNIREP_TEST_ABSENT"] == "set"
        raise RuntimeError("the block fails")
    assert dict(os.environ) == before


def test_allow_downloads_is_scoped_and_leaves_a_users_own_setting(monkeypatch):
    monkeypatch.delenv(ALLOW_DOWNLOAD, raising=False)
    assert not downloads_allowed()
    with allow_downloads():
        assert downloads_allowed() and os.environ[ALLOW_DOWNLOAD] == "1"
    assert not downloads_allowed() and ALLOW_DOWNLOAD not in os.environ
    monkeypatch.setenv(ALLOW_DOWNLOAD, "yes")  # set by the user: allow_downloads(False) must not switch it off
    with allow_downloads(False):
        assert downloads_allowed()
    assert os.environ[ALLOW_DOWNLOAD] == "yes"


def test_hub_offline_sets_the_variable_and_the_constant_huggingface_hub_read_at_import(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with switches(hub_offline=True):
        assert os.environ["HF_HUB_OFFLINE"] == "1" and huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert "HF_HUB_OFFLINE" not in os.environ and huggingface_hub.constants.HF_HUB_OFFLINE is False
    with pytest.raises(TypeError, match="unknown runtime switch"):
        with switches(hub_ofline=True):
            pass


def test_a_library_first_imported_inside_the_block_is_restored_too():
    # huggingface_hub not imported yet: its import-time constant must not keep the block's value afterwards.
    code = ("import json, os, sys; from unirep.runtime_env import switches\n"
            "assert 'huggingface_hub' not in sys.modules\n"
            "with switches(hub_offline=True):\n"
            "    import huggingface_hub.constants as c; inside = c.HF_HUB_OFFLINE\n"
            "print(json.dumps([inside, c.HF_HUB_OFFLINE, os.environ.get('HF_HUB_OFFLINE')]))")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [True, False, None]


@pytest.mark.parametrize("flag", [True, False])
def test_eval_download_holds_during_the_command_only(tmp_path, monkeypatch, flag):
    monkeypatch.delenv(ALLOW_DOWNLOAD, raising=False)
    seen = []
    real_create_task = unirep.evaluate.create_task

    def create_task_noting_downloads(name):  # a spy: the real task is built
        seen.append(downloads_allowed())
        return real_create_task(name)

    monkeypatch.setattr(unirep.evaluate, "create_task", create_task_noting_downloads)
    before = dict(os.environ)
    argv = ["eval", "raw-pixels", "--tasks", "lfw-faces", "--protocols", "knn", "--out", str(tmp_path / "out"),
            "--cache-dir", str(tmp_path / "cache"), *(["--download"] if flag else [])]
    assert main(argv) == 0
    assert seen == [flag]
    assert dict(os.environ) == before


def _environ_writes(tree: ast.AST) -> list[int]:
    """Lines that write os.environ: item assignment/deletion, or a mutating method call, or os.putenv/unsetenv."""
    def is_environ(node):
        return isinstance(node, ast.Attribute) and node.attr == "environ" and \
            isinstance(node.value, ast.Name) and node.value.id == "os"

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and is_environ(node.value) and isinstance(node.ctx, ast.Store | ast.Del):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func
            if is_environ(target.value) and target.attr in {"update", "setdefault", "pop", "popitem", "clear"}:
                lines.append(node.lineno)
            elif isinstance(target.value, ast.Name) and target.value.id == "os" and \
                    target.attr in {"putenv", "unsetenv"}:
                lines.append(node.lineno)
    return lines


def test_only_runtime_env_writes_the_environment():
    writers = {str(path.relative_to(ROOT)): lines for path in sorted((ROOT / "unirep").rglob("*.py"))
               if (lines := _environ_writes(ast.parse(path.read_text(encoding="utf-8"))))}
    assert writers.pop("unirep/runtime_env.py")  # the one scoped place (and the scan sees its writes)
    assert writers == {}  # everyone else goes through it (training/determinism.py: preserved_environ)
    old_cli_line = 'if args.download:\n    os.environ["UNIREP_ALLOW_DOWNLOAD"] = "1"\n'
    assert _environ_writes(ast.parse(old_cli_line)) == [2]  # what commands/evaluate.py did before
