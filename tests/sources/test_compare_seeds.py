"""A comparison with a `seeds` list trains every preset and the random-init control once per seed, labels them
`source:<preset>@seed<k>`, reuses finished seeds on a re-run, and its evaluation's leaderboard reports mean ±
t-interval over the seeds; a bad seeds value is one ConfigError line."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file
from scipy import stats

from unirep.backbones import create_backbone
from unirep.cli import main
from unirep.config import EvalConfig, load_config
from unirep.errors import ConfigError
from unirep.evaluate import evaluate
from unirep.leaderboard import build_leaderboard
from unirep.sources.compare import train_comparison

WEIGHTS = "weights.safetensors"


def comparison_file(tmp_path, tiny, **extra):
    overrides = [item for item in tiny.dotlist(tmp_path, "reference") if not item.startswith(("scheme=", "out="))]
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump({"compare": ["reference"], "out": str(tmp_path / "cmp"), "overrides": overrides,
                                    "seeds": [0, 1], "eval": {"tasks": ["sklearn-digits"], "protocols": ["knn"]},
                                    **extra}))
    return path


def weights(folder):
    return load_file(str(folder / WEIGHTS))


def test_each_preset_and_the_control_is_trained_per_seed_and_reported_over_seeds(tmp_path, tiny):
    out, rows = train_comparison(comparison_file(tmp_path, tiny))
    assert [(r["preset"], r["seed"]) for r in rows] == [("reference", 0), ("random-init", 0), ("reference", 1),
                                                         ("random-init", 1)]
    for preset in ("reference", "random-init"):
        first, second = out / preset / "seed0", out / preset / "seed1"
        assert create_backbone(str(second)).metadata["training"]["seed"] == 1
        # Another seed is another network: other initial weights (the untrained control too) and training.
        a, b = weights(first), weights(second)
        assert a.keys() == b.keys() and any(not np.array_equal(a[k], b[k]) for k in a if a[k].dtype.kind == "f")
    eval_cfg = yaml.safe_load((out / "eval.yaml").read_text())
    assert [b["label"] for b in eval_cfg["backbones"]] == ["source:reference@seed0", "source:random-init@seed0",
                                                            "source:reference@seed1", "source:random-init@seed1"]

    # Resume: a re-run reads every finished seed back; after losing seed 1 of the reference, only it trains again.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob(f"*/seed*/{WEIGHTS}")}
    _, again = train_comparison(comparison_file(tmp_path, tiny))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert [r["seconds"] for r in again] == [r["seconds"] for r in rows]  # the recorded training times, not a redo
    lost = out / "reference" / "seed1"
    trained_before = weights(lost)
    for path in lost.rglob("*"):
        if path.is_file():
            path.unlink()
    train_comparison(comparison_file(tmp_path, tiny))
    kept = {p: s for p, s in stamps.items() if lost not in p.parents}
    assert len(kept) == 3 and {p: p.stat().st_mtime_ns for p in kept} == kept
    retrained = weights(lost)  # the same seed trains the same network again
    assert all(np.allclose(retrained[k], v, rtol=1e-4, atol=1e-6) for k, v in trained_before.items())

    records = evaluate(load_config(EvalConfig, out / "eval.yaml", [f"cache_dir={tmp_path / 'cache'}", "knn.ks=[1, 5]"]))
    board = build_leaderboard([out / "eval"], reference="source:random-init@seed0", n_boot=0)
    table = board.seeds.set_index(["protocol", "backbone", "quantity"])
    score = {r.backbone: r.score for r in records}
    for preset in ("reference", "random-init"):
        values = [score[f"source:{preset}@seed{s}"] for s in (0, 1)]
        row = table.loc[("knn", f"source:{preset}", "sklearn-digits")]
        interval = stats.t.interval(0.95, 1, loc=np.mean(values), scale=stats.sem(values))
        assert row["mean"] == pytest.approx(np.mean(values), abs=1e-9)
        assert (row["low"], row["high"]) == pytest.approx(interval, abs=1e-9)
    nrg = [100 * (score[f"source:reference@seed{s}"] - score[f"source:random-init@seed{s}"])
           / (100 - score[f"source:random-init@seed{s}"]) for s in (0, 1)]
    assert table.loc[("knn", "source:reference", "mnrg")]["mean"] == pytest.approx(np.mean(nrg), abs=1e-9)
    assert board.single_seed == []


@pytest.mark.parametrize(("setting", "message"), [
    ("seeds=[]", "must be a list of distinct integers >= 0"),
    ("seeds=[1,1]", "must be a list of distinct integers >= 0"),
    ("seeds=[-1]", "must be a list of distinct integers >= 0"),
    ("seeds=abc", "seeds: Invalid value"),
    ("seed=3", "conflicts with the comparison's seeds=[0, 1]"),
])
def test_bad_seeds_are_one_config_error_line_before_anything_trains(tmp_path, tiny, capsys, setting, message):
    path = comparison_file(tmp_path, tiny)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        train_comparison(path, [setting])
    assert main(["train-source", str(path), setting]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "cmp").exists()
