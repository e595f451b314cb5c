"""Distributed evaluation on Lightning Fabric, on CPU with 2 processes (gloo), through the real CLI: the gathered
features equal a one-process run's (same order), each rank ran about half of every split through the backbone,
the records equal the one-process records, and no process but global rank 0 wrote a file.

Who wrote what is observed, not assumed: the subprocesses run with a `sitecustomize` (on PYTHONPATH, inherited by
the copy of the command Lightning starts) that installs a Python audit hook; every open-for-writing, rename, mkdir
and remove under the test's folder is logged, per process, to a file outside it, with the LOCAL_RANK the process
was started with (Lightning's launcher starts rank 1 with LOCAL_RANK=1; rank 0 is the process the test started).

Numbers: raw pixels are exact, so both runs give identical features and records. The CNN (timm's
test_efficientnet_gn, random weights, GroupNorm: no batch statistics) sees other batch compositions in the sharded
run (rank 1's batches start at the middle of a split), which may change float32 summation order: its features
are compared at rtol=atol=1e-5 (their magnitude is ~1), its kNN records exactly (a vote that float32 noise could
flip would need two neighbours within ~1e-6 in cosine; none here, and such a case would fail loudly, not pass),
its linear records by the same selection (C, tolerance, tie rule and uncertain val predictions at C: what the
noise-stable selection promises on features that agree to float32 noise) and >= 99 % equal test predictions. Which
near-best Cs the selection re-solved (`reselected_Cs`) follows the loose sweep's scores, so the noise: it is the
work done, not the outcome, and is compared for raw pixels only (seen on an AMD EPYC: [0.01, 0.1, 1, 10] against
[0.01, 0.1, 1], the same C 0.01 with no uncertain prediction). Both runs use one thread per process
(OMP_NUM_THREADS=1 / torch.set_num_threads(1)), so the probes' own summation order is the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from unirep.config import EvalConfig, load_config
from unirep.distributed import World
from unirep.errors import ConfigError
from unirep.evaluate import evaluate
from unirep.results import load_records, slug
from unirep.tasks import create_task

ROOT = Path(__file__).resolve().parents[1]
CNN = "random:test_efficientnet_gn"
# Raw pixels at 16 px (768-D) and the CNN at 32 px: small enough for the linear sweep to take seconds.
SETTINGS = ("linear.n_c=12", "max_input_size=32", "batch_size=64")

AUDIT_HOOK = textwrap.dedent('''
    """Logs every file-system write of this process under UNIREP_TEST_WATCH to UNIREP_TEST_WRITE_LOG/<pid>.jsonl."""
    import json, os, sys

    _watch = os.environ.get("UNIREP_TEST_WATCH")
    _log_dir = os.environ.get("UNIREP_TEST_WRITE_LOG")
    if _watch and _log_dir:
        _log = open(os.path.join(_log_dir, f"{os.getpid()}.jsonl"), "a", buffering=1)
        _log.write(json.dumps({"started_with_local_rank": os.environ.get("LOCAL_RANK"), "argv": sys.argv}) + "\\n")
        _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
        _PATH_EVENTS = {"os.rename": 2, "os.mkdir": 1, "os.remove": 1, "os.rmdir": 1, "os.truncate": 1,
                        "os.symlink": 2, "os.link": 2, "os.chmod": 1}

        def _watched(path):
            if not isinstance(path, (str, bytes, os.PathLike)):
                return None
            path = os.path.abspath(os.fsdecode(path))
            return path if path.startswith(_watch) else None

        def _hook(event, args):
            if event == "open":
                path, mode, flags = args
                writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \\
                    (isinstance(flags, int) and flags & _WRITE_FLAGS)
                paths = [path] if writing else []
            elif event in _PATH_EVENTS:
                paths = list(args[:_PATH_EVENTS[event]])
            else:
                return
            for path in filter(None, map(_watched, paths)):
                _log.write(json.dumps({"event": event, "path": path}) + "\\n")

        sys.addaudithook(_hook)
''')


def cli(tmp_path: Path, *args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    """The unirep CLI in a subprocess, with the write-logging audit hook and one thread per process."""
    hook_dir, log_dir = tmp_path / "hook", tmp_path / "write-log"
    hook_dir.mkdir(exist_ok=True)
    log_dir.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": f"{hook_dir}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1", "UNIREP_QUIET": "1",
           "UNIREP_TEST_WATCH": str(tmp_path / "work"), "UNIREP_TEST_WRITE_LOG": str(log_dir)}
    done = subprocess.run([sys.executable, "-m", "unirep.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def writes_by_process(tmp_path: Path) -> dict[str, list[str]]:
    """{LOCAL_RANK the process started with ("None": the process the test started): paths it wrote}."""
    found: dict[str, list[str]] = {}
    for log in sorted((tmp_path / "write-log").glob("*.jsonl")):
        head, *events = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
        found.setdefault(str(head["started_with_local_rank"]), []).extend(e["path"] for e in events)
    return found


def cache_entries(cache: Path) -> dict[str, dict[str, np.ndarray]]:
    entries = {}
    for path in sorted(cache.rglob("*.npz")):
        with np.load(path) as data:
            entries[path.relative_to(cache).as_posix()] = {k: data[k] for k in data.files}
    return entries


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_process_eval_equals_one_process_eval_and_only_rank_zero_writes(tmp_path, monkeypatch, one_thread):
    work = tmp_path / "work"
    ddp_out, ddp_cache = work / "ddp", work / "ddp-cache"
    done = cli(tmp_path, "eval", "raw-pixels", "--input-size", "16", CNN, "--tasks", "sklearn-digits",
               "--protocols", "linear,knn", "--out", str(ddp_out), "--cache-dir", str(ddp_cache), *SETTINGS,
               "strategy=ddp", "devices=2", "accelerator=cpu")
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr + done.stdout
    assert done.stdout.count("records in") == 1  # global rank 0 reports, alone

    monkeypatch.setenv("UNIREP_QUIET", "1")
    single_cache = tmp_path / "single-cache"
    cfg = load_config(EvalConfig, dotlist=[f"backbones=[{{name: raw-pixels, input_size: 16}},'{CNN}']",
                                           "tasks=[sklearn-digits]",
                                           "protocols=[linear,knn]", f"out={tmp_path / 'single'}",
                                           f"cache_dir={single_cache}", *SETTINGS])
    single = {(r.backbone, r.protocol): r for r in evaluate(cfg)}
    ddp_records, bad = load_records(ddp_out)
    assert not bad
    ddp = {(r.backbone, r.protocol): r for r in ddp_records}
    assert ddp.keys() == single.keys() and len(ddp) == 4

    # Each rank ran its contiguous half of every split through the backbone (counts each rank measured).
    task = create_task("sklearn-digits")
    counts = task.manifest.counts
    for record in ddp.values():
        per_rank = record.timings["extract_images_per_rank"]
        assert per_rank == {split: [n // 2, n - n // 2] for split, n in counts.items()}, per_rank
    assert f"on 2 processes: {counts['train'] // 2} + {counts['train'] - counts['train'] // 2} images" in done.stderr
    assert {r.timings["job_rank"] for r in ddp.values()} == {0, 1}  # the probe jobs were dealt to both ranks

    # The cache entries: same keys (the key is unchanged), same labels, features equal in manifest order.
    ddp_entries, single_entries = cache_entries(ddp_cache), cache_entries(single_cache)
    assert ddp_entries.keys() == single_entries.keys() and len(ddp_entries) == 6  # 2 backbones x 3 splits
    exact = 0
    for name, entry in single_entries.items():
        np.testing.assert_array_equal(ddp_entries[name]["labels"], entry["labels"])
        assert str(ddp_entries[name]["key"]) == str(entry["key"])
        assert ddp_entries[name]["features"].shape == entry["features"].shape
        np.testing.assert_allclose(ddp_entries[name]["features"], entry["features"], rtol=1e-5, atol=1e-5)
        exact += np.array_equal(ddp_entries[name]["features"], entry["features"])
    assert exact >= 3  # raw pixels: bit-identical

    # The records: raw pixels and kNN exactly; the CNN's linear probe makes the same selection on features that
    # agree to float32 noise (checked above), and its test predictions are those of that C.
    def outcome(hyperparameters: dict) -> dict:  # the selection, without the list of Cs it re-solved on the way
        return {name: value for name, value in hyperparameters.items() if name != "reselected_Cs"}

    for key, want in single.items():
        got = ddp[key]
        assert (got.n_train, got.n_val, got.n_test) == (want.n_train, want.n_val, want.n_test)
        assert got.test_labels == want.test_labels
        if key[0] == "raw-pixels" or key[1] == "knn":
            assert got.hyperparameters == want.hyperparameters, key
            assert got.score == want.score and got.val_score == want.val_score, key
            assert got.test_predictions == want.test_predictions, key
        else:
            assert got.hyperparameters.keys() == want.hyperparameters.keys(), key
            assert outcome(got.hyperparameters) == outcome(want.hyperparameters), key
            assert want.hyperparameters["C"] in got.hyperparameters["reselected_Cs"], key  # chosen on a tight score
            agree = np.mean(np.array(got.test_predictions) == np.array(want.test_predictions))
            assert agree >= 0.99 and got.score == pytest.approx(want.score, abs=1.0), key

    # Writes: rank 1 wrote nothing under the test's folder; rank 0 wrote the records, cache, config.
    writes = writes_by_process(tmp_path)
    assert set(writes) == {"None", "1"}, writes.keys()
    assert writes["1"] == []
    written = {Path(p).name for p in writes["None"]}
    assert "config.yaml" in written and "linear-seed0.json" in written
    assert sum(p.endswith(".npz") for p in written) == 6
    assert sorted(p.relative_to(ddp_out).as_posix() for p in ddp_out.rglob("*") if p.is_file()) == sorted([
        "config.yaml", *(f"records/{slug(b)}/sklearn-digits/{p}-seed0.json" for b in ("raw-pixels", CNN)
                         for p in ("knn", "linear"))])


def test_unirep_run_with_a_distributed_eval_section(tmp_path, monkeypatch, one_thread):
    work = tmp_path / "work"
    config = work / "run.yaml"
    work.mkdir()
    eval_section = {"backbones": [{"name": "raw-pixels", "input_size": 16}], "tasks": ["lfw-faces"],
                    "protocols": ["linear", "knn"], "cache_dir": str(work / "cache"), "linear": {"n_c": 12}}
    config.write_text(json.dumps({"out": str(work / "run"), "sources": None, "leaderboard": {
        "out": str(work / "leaderboard"), "n_boot": 50}, "eval": {**eval_section, "strategy": "ddp", "devices": 2,
                                                                  "accelerator": "cpu"}}), encoding="utf-8")
    done = cli(tmp_path, "run", str(config))
    assert done.stdout.count("leaderboard page:") == 1
    assert (work / "leaderboard" / "index.html").is_file()
    records, bad = load_records(work / "run" / "eval")
    assert not bad and sorted(r.protocol for r in records) == ["knn", "linear"]
    for record in records:
        assert record.timings["extract_images_per_rank"] == {"train": [50, 50], "val": [20, 20], "test": [30, 30]}

    monkeypatch.setenv("UNIREP_QUIET", "1")
    cfg = load_config(EvalConfig, dotlist=[f"out={tmp_path / 'single'}"], **eval_section)
    single = {r.protocol: r for r in evaluate(cfg)}
    for record in records:
        want = single[record.protocol]
        assert (record.score, record.val_score, record.hyperparameters, record.test_predictions) == (
            want.score, want.val_score, want.hyperparameters, want.test_predictions)

    writes = writes_by_process(tmp_path)
    assert set(writes) == {"None", "1"} and writes["1"] == []
    assert any(p.endswith("index.html") for p in writes["None"])


@pytest.mark.parametrize(("overrides", "says"), [
    (("strategy=ddp_spawn", "devices=2"), "strategy='ddp_spawn' cannot run this pipeline"),
    (("strategy=fsdp", "devices=2"), "strategy='fsdp' cannot run this pipeline"),
    (("strategy=ddp", "devices=2", "device=cpu"), "device='cpu' names one device"),
    (("devices=0",), "devices=0 is invalid"),
    (("accelerator=cpu", "device=cuda"), "CUDA is not available"),
    (("accelerator=gpu",), "accelerator 'gpu' requested but CUDA is not available"),
    (("protocols=[finetune]", "strategy=ddp", "devices=2", "finetune.devices=3"), "finetune.devices=3"),
])
def test_a_bad_combination_is_one_config_error_before_any_process_starts(tmp_path, overrides, says):
    if torch.cuda.is_available() and "CUDA" in says:
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="^[^\n]+$") as raised:
        cfg = load_config(EvalConfig, dotlist=["backbones=[raw-pixels]", "tasks=[lfw-faces]",
                                               f"out={tmp_path / 'out'}", f"cache_dir={tmp_path / 'c'}", *overrides])
        evaluate(cfg)
    assert says in str(raised.value)
    assert not (tmp_path / "out" / "records").exists() and not (tmp_path / "c").exists()
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_shards_cover_every_item_once_in_order(size):
    for n in (0, 1, 7, 897, 1000):
        shards = [World(rank, size).shard(n) for rank in range(size)]
        assert [i for shard in shards for i in shard] == list(range(n))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_fine_tuning_runs_in_the_eval_processes(tmp_path):
    """The Trainer of a fine-tuning job uses the eval's processes: a distributed eval sets finetune's world to its
    own, and `finetune.strategy=ddp finetune.devices=N` alone makes the whole eval distributed (the path
    tests/finetune/test_finetune_ddp.py runs end to end: Fabric starts the processes, the Trainer joins them)."""
    from unirep.evaluate import run_world_settings
    from unirep.protocols import create_protocol

    def settings(*overrides):
        cfg = load_config(EvalConfig, dotlist=["backbones=[raw-pixels]", "tasks=[lfw-faces]", "protocols=[finetune]",
                                               f"out={tmp_path}", *overrides])
        return run_world_settings(cfg, {name: create_protocol(name, cfg) for name in cfg.protocols})

    cfg, world = settings("strategy=ddp", "devices=2", "accelerator=cpu")
    assert (world.strategy, world.devices, world.accelerator) == ("ddp", 2, "cpu")
    assert (cfg.finetune.strategy, cfg.finetune.devices, cfg.finetune.num_nodes, cfg.finetune.accelerator) == (
        "ddp", 2, 1, "cpu")
    cfg, world = settings("finetune.strategy=ddp", "finetune.devices=2", "finetune.accelerator=cpu")
    assert (world.strategy, world.devices, world.accelerator, world.single) == ("ddp", 2, "cpu", False)
    _, world = settings("strategy=ddp", "devices=2", "protocols=[linear]")  # no Trainer: finetune.* play no part
    assert world.devices == 2
    with pytest.raises(ConfigError, match="finetune.accelerator='gpu' differs"):
        settings("strategy=ddp", "devices=2", "accelerator=cpu", "finetune.accelerator=gpu")
