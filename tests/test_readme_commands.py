"""Every command line of the README's *Commands* block, read from README.md itself, runs through `unirep.cli.main`
in README order, in a scratch directory, with tiny overrides appended (a smaller task, 32 px, a short C grid, one
epoch); a line that needs an earlier line's output (`unirep build runs/offline`) finds it there. So the README
cannot document a command line that fails.

Each line has one plan below, found by the start of the line; a README line without a plan, or a plan without
its line, fails `test_every_readme_command_has_a_plan`. Lines that need the network are checked with the real
parser only (not run), with the reason listed in their plan.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from unirep.cli import build_parser, main, parse_args
from unirep.commands.backbone_options import COLLECTED, backbone_entries
from unirep.results import load_records

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TINY_EVAL = ("max_input_size=32", "linear.n_c=3")  # 32 px, 3 values of C: what every eval-like line adds
SMALL_TASK = "lfw-faces"  # 100 / 40 / 60 images, the smallest embedded task
TINY_FINETUNE = ("finetune.lrs=[0.05]", "finetune.max_epochs=1", "finetune.patience=1", "finetune.batch_size=32",
                 "finetune.precision=32-true", "finetune.accelerator=cpu")
TINY_SOURCE = ("data.train_size=200", "data.val_size=100", "data.input_size=16", "data.batch_size=40",
               "model.architecture=test_resnet", "optim.epochs=1", "trainer.progress_bar=false",
               "trainer.accelerator=cpu")


def readme_commands() -> list[list[str]]:
    """The command lines of the fenced block under '## Commands', as argv lists without the leading `unirep`."""
    section = README.read_text(encoding="utf-8").split("\n## Commands\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
    assert all(line[0] == "unirep" for line in lines), "every line of the Commands block is a unirep command"
    return [line[1:] for line in lines]


@dataclass
class Plan:
    """How one README line is run: `tasks` replaces its --tasks values, `extra` is appended, `prepare(cwd)` writes
    the inputs a user would bring (their weights, cards, a published table), `check(cwd, stdout)` asserts on what
    it produced. `skip` is the reason a line is not run."""

    start: str  # the line begins with these words
    tasks: str | None = None
    extra: tuple[str, ...] = ()
    prepare: Callable[[Path], None] | None = None
    check: Callable[[Path, str], None] | None = None
    skip: str | None = None
    cache: bool = True  # the line takes --cache-dir (eval, extract, score, finetune)
    argv: list[str] = field(default_factory=list)

    def matches(self, line: list[str]) -> bool:
        return " ".join(line).startswith(self.start)

    def command_line(self, line: list[str], cache: Path) -> list[str]:
        argv = list(line)
        if self.tasks is not None:
            flag = next(f for f in ("--tasks", "--task") if f in argv)
            i = argv.index(flag) + 1
            while i < len(argv) and not argv[i].startswith("-") and "=" not in argv[i]:
                argv.pop(i)
            argv.insert(i, self.tasks)
        return [*argv, *(["--cache-dir", str(cache)] if self.cache else []), *self.extra]


# ---- what each line must produce (independent of the code under test where a value can be recomputed) ----

def _records(path: Path) -> list:
    records, bad = load_records(path)
    assert not bad, bad
    for record in records:  # every score is the metric of the predictions stored next to it
        if record.metric == "top1":
            expected = 100 * np.mean(np.array(record.test_predictions) == np.array(record.test_labels))
            assert record.score == pytest.approx(expected), record.backbone
    return records


def check_list(cwd: Path, stdout: str) -> None:
    assert stdout.split() == ["tf_efficientnet_lite0.packaged_in1k", "tf_efficientnet_lite1.packaged_in1k"]


def check_demo(cwd: Path, stdout: str) -> None:
    got = sorted((r.backbone, r.task, r.protocol) for r in _records(cwd / "runs/demo"))
    backbones = ("mobilenetv2_100.packaged_in1k", "raw-pixels")
    assert got == [(b, SMALL_TASK, p) for b in backbones for p in ("knn", "linear")]
    assert "mobilenetv2_100.packaged_in1k" in stdout and "raw-pixels" in stdout


def check_overrides(cwd: Path, stdout: str) -> None:
    records = [r for r in _records(cwd / "runs/eval") if r.backbone.startswith("random:")]  # runs/eval is shared
    assert sorted((r.backbone, r.protocol) for r in records) == [("random:resnet18", "knn"),
                                                                 ("random:resnet18", "linear")]
    linear = next(r for r in records if r.protocol == "linear")
    assert linear.config["linear"]["n_c"] == 3 and linear.config["max_input_size"] == 32  # appended ones win
    assert linear.backbone_identity["weights_id"] == "random:seed=0" and linear.task == SMALL_TASK
    assert "random:resnet18" in stdout  # the summary says what the weights are


def check_offline_config(cwd: Path, stdout: str) -> None:
    records = _records(cwd / "runs/offline")
    backbones = ["mobilenetv2_100.packaged_in1k", "random:mobilenetv2_100.packaged_in1k", "raw-pixels",
                 "tf_efficientnet_lite0.packaged_in1k"]
    assert sorted({r.backbone for r in records}) == backbones and len(records) == 8
    assert {r.backbone_identity["weights_id"] for r in records if r.backbone.startswith("random:")} == {"random:seed=0"}


def check_extract(cwd: Path, stdout: str) -> None:
    folder = cwd / "features" / "tf_efficientnet_lite0.packaged_in1k" / SMALL_TASK
    for split, n in (("train", 100), ("val", 40), ("test", 60)):
        with np.load(folder / f"{split}.npz") as data:
            assert data["features"].shape == (n, 1280) and data["labels"].shape == (n,)
            assert np.isfinite(data["features"]).all()


def prepare_own_data(cwd: Path) -> None:
    """A user's own weights file (a seeded ResNet-18 state dict) and an ImageFolder card of real images (the
    first 12 of sklearn's digits 0, 1 and 2, upscaled)."""
    import timm
    import torch
    from PIL import Image
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        save_file(timm.create_model("resnet18").state_dict(), str(cwd / "my-resnet18.safetensors"))
    digits = load_digits()
    for label in (0, 1, 2):
        folder = cwd / "my-cards" / "photos" / f"digit{label}"
        folder.mkdir(parents=True)
        for i, image in enumerate(digits.images[digits.target == label][:12]):
            pixels = (image * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels).resize((32, 32), Image.NEAREST).convert("RGB").save(folder / f"{i}.png")
    (cwd / "my-cards" / "flowers.yaml").write_text(
        "name: my-flowers\nmetric: top1\ndata:\n  format: imagefolder\n  root: photos\n  val_fraction: 0.25\n"
        "  test_fraction: 0.25\n  min_per_class: 3\n", encoding="utf-8")


def check_own_data(cwd: Path, stdout: str) -> None:
    from unirep.fileio import sha256_file

    records = _records(cwd / "runs/eval")
    own = [r for r in records if r.task == "my-flowers"]
    assert sorted(r.protocol for r in own) == ["knn", "linear"]
    for record in own:
        assert record.backbone == "resnet18@stage3" and record.n_train + record.n_val + record.n_test == 36
        identity = record.backbone_identity
        assert identity["weights_id"] == f"sha256:{sha256_file(cwd / 'my-resnet18.safetensors')}"
        assert identity["layer"] == "stage3" and identity["num_features"] == 256


def check_score(cwd: Path, stdout: str) -> None:
    records = [r for r in _records(cwd / "runs/eval") if r.task == SMALL_TASK]
    by_backbone = {b: sorted(r.protocol for r in records if r.backbone == b)
                   for b in ("mobilenetv2_100.packaged_in1k", "raw-pixels")}
    # LEEP and NCE read a source classifier, which raw pixels do not have
    assert by_backbone == {"mobilenetv2_100.packaged_in1k": ["alpha-req", "hscore", "hscore-shrinkage", "leep", "logme",
                                                             "nc1", "nce", "nleep", "rankme"],
                           "raw-pixels": ["alpha-req", "hscore", "hscore-shrinkage", "logme", "nc1", "nleep", "rankme"]}
    assert "logme (higher = should transfer better)" in stdout


def check_finetune(cwd: Path, stdout: str) -> None:
    (record,) = _records(cwd / "runs/ft")
    assert (record.backbone, record.task, record.protocol) == ("mobilenetv2_100.packaged_in1k", SMALL_TASK, "finetune")
    assert record.hyperparameters["mode"] == "lp-ft" and record.hyperparameters["refit"] == "train+val"
    assert f"{record.backbone} / {SMALL_TASK}: lp-ft" in stdout


def check_train_source(cwd: Path, stdout: str) -> None:
    out = cwd / "runs/sources/muldip"
    assert (out / "weights.safetensors").is_file() and (out / "unirep-checkpoint.json").is_file()
    meta = json.loads((out / "unirep-checkpoint.json").read_text())
    assert len(meta["networks"]) == 3  # one network per label set: original, k-means, hierarchy
    assert "source val top-1" in stdout


def check_build(cwd: Path, stdout: str) -> None:
    wide = pd.read_csv(cwd / "leaderboard" / "results-wide.csv")
    linear = wide[wide["protocol"] == "linear"].set_index("backbone")[SMALL_TASK]
    expected = {r.backbone: r.score for r in _records(cwd / "runs/offline") if r.protocol == "linear"}
    assert linear.to_dict() == pytest.approx(expected, abs=1e-4)  # the random: name reaches the CSVs
    assert (cwd / "leaderboard" / "index.html").is_file() and (cwd / "leaderboard" / "leaderboard.md").is_file()


PUBLISHED = {"method": ["resnet50", "vit-b16", "raw-pixels"], "cifar10": [96.0, 98.5, 40.0],
             "pets": [92.0, 93.0, 10.0], "flowers": [94.0, 99.0, 30.0]}


def prepare_published(cwd: Path) -> None:
    pd.DataFrame(PUBLISHED).to_csv(cwd / "published_table.csv", index=False)


def check_universality(cwd: Path, stdout: str) -> None:
    table = pd.DataFrame(PUBLISHED).set_index("method")
    for method, mean in table.mean(axis=1).items():  # the plain mean, computed here
        row = next(line for line in stdout.splitlines() if line.split() and line.split()[0] == method)
        assert f"{mean:.2f}" in row, (method, row)


PLANS = [
    Plan("list backbones", check=check_list, cache=False),
    Plan("eval mobilenetv2_100.packaged_in1k raw-pixels --tasks offline", tasks=SMALL_TASK, extra=TINY_EVAL,
         check=check_demo),
    Plan("eval random:resnet18 --tasks sklearn-digits", tasks=SMALL_TASK, extra=TINY_EVAL, check=check_overrides),
    Plan("eval --config configs/eval-offline.yaml", extra=(f"tasks=[{SMALL_TASK}]", *TINY_EVAL),
         check=check_offline_config),
    Plan("extract tf_efficientnet_lite0.packaged_in1k", tasks=SMALL_TASK, extra=("max_input_size=32",),
         check=check_extract),
    Plan("eval resnet18 --weights my-resnet18.safetensors", extra=TINY_EVAL, prepare=prepare_own_data,
         check=check_own_data),
    Plan("eval resnet50 --pretrained --tasks kornblith12 --download",
         skip="needs the network: --pretrained fetches timm's hub weights and --download the kornblith12 data"),
    Plan("score mobilenetv2_100.packaged_in1k raw-pixels --tasks offline", tasks=SMALL_TASK, extra=TINY_EVAL,
         check=check_score),
    Plan("finetune mobilenetv2_100.packaged_in1k --task lfw-faces --mode lp-ft", extra=(*TINY_EVAL, *TINY_FINETUNE),
         check=check_finetune),
    Plan("train-source configs/sources/muldip.yaml", extra=TINY_SOURCE, check=check_train_source, cache=False),
    Plan("build runs/offline", extra=("--n-boot", "20"), check=check_build, cache=False),
    Plan("universality published_table.csv", prepare=prepare_published, check=check_universality, cache=False),
]


def plan_for(line: list[str]) -> Plan:
    (plan,) = [p for p in PLANS if p.matches(line)] or [None]
    assert plan is not None, f"README line `unirep {' '.join(line)}` has no plan in {__name__}: add one"
    return plan


def test_every_readme_command_has_a_plan():
    lines = readme_commands()
    for line in lines:
        assert sum(p.matches(line) for p in PLANS) == 1, f"`unirep {' '.join(line)}`: exactly one plan must match"
    stale = [p.start for p in PLANS if not any(p.matches(line) for line in lines)]
    assert not stale, f"plans whose README line is gone: {stale}"


@dataclass
class Outcome:
    argv: list[str]
    code: int
    stdout: str
    stderr: str
    seconds: float


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> tuple[Path, dict[str, Outcome]]:
    """Every runnable line, in README order, in one scratch directory sharing one feature cache."""
    cwd, cache = tmp_path_factory.mktemp("readme"), tmp_path_factory.mktemp("readme-cache")
    (cwd / "configs").symlink_to(REPO / "configs")  # `--config configs/...` as typed in a checkout
    outcomes: dict[str, Outcome] = {}
    previous = Path.cwd()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UNIREP_QUIET", "1")
        os.chdir(cwd)
        try:
            for line in readme_commands():
                plan = plan_for(line)
                if plan.skip:
                    continue
                if plan.prepare:
                    plan.prepare(cwd)
                argv = plan.command_line(line, cache)
                stdout, stderr = io.StringIO(), io.StringIO()
                start = time.perf_counter()
                with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                    code = main(argv)
                outcomes[plan.start] = Outcome(argv, code, stdout.getvalue(), stderr.getvalue(),
                                               time.perf_counter() - start)
        finally:
            os.chdir(previous)
    for start, outcome in outcomes.items():  # shown with `pytest -s`
        print(f"README line `unirep {start} ...`: {outcome.seconds:.1f} s")
    return cwd, outcomes


@pytest.mark.parametrize("line", readme_commands(), ids=lambda line: " ".join(line[:2]))
def test_readme_command_runs(ran, line):
    plan = plan_for(line)
    if plan.skip:
        # Not run, but it must still be a valid command line for today's parser (no drift in its syntax).
        args = parse_args(build_parser(), line)
        assert args.command == line[0]
        if isinstance(getattr(args, "items", None), list):  # its backbone options sit where they belong
            backbone_entries(args.items, getattr(args, COLLECTED, None) or [])
        assert getattr(args, "download", False) == ("--download" in line)
        return  # checked as far as an offline machine can: the parser (plan.skip says why it is not run)
    cwd, outcomes = ran
    outcome = outcomes[plan.start]
    assert outcome.code == 0, f"`unirep {shlex.join(outcome.argv)}` exited {outcome.code}: {outcome.stderr[-2000:]}"
    plan.check(cwd, outcome.stdout)
