"""The bad-input and fault catalogue (issue 11, item 5): every case a user or a crash can cause, with its outcome.

Two outcomes only:
  refuse  — exit code 2, one `unirep <command>: error: ...` line that names what is wrong, where, and how to fix
            it, no traceback, and every file that existed before (records, config.yaml, feature cache) unchanged.
  recover — the run finishes: a corrupt cache entry is re-extracted (never trusted), a corrupt record recomputed,
            a killed run resumes, concurrent writers both finish; nothing already computed is recomputed or lost.

CATALOGUE below is the list at a glance; the refusals are parametrised over it (their inputs are built by the
functions registered with @refusal), the recoveries have tests of their own shape (each marked @covers). The
last test checks that every row has exactly one test. Runs on raw pixels / tiny timm `test_*` networks at 16 px
on sklearn-digits, with the real CLI: in-process (`unirep.cli.main`) where it can, in a subprocess for the
kill, concurrency and broken-pipe cases (killed at deterministic points: `unirep.faults`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from unirep.cli import main
from unirep.faults import ENV_FAULT
from unirep.results import load_records, read_record

REFUSE, RECOVER = "refuse", "recover"


@dataclass(frozen=True)
class Case:
    id: str
    input: str
    outcome: str  # REFUSE or RECOVER
    expected: str


CATALOGUE = [
    # --- configuration: refused before any work -----------------------------------------------------------------
    Case("config-malformed-yaml", "--config file with a YAML syntax error", REFUSE, "names the file, line, column"),
    Case("config-not-mapping", "--config file holding a YAML list", REFUSE, "says a mapping is needed"),
    Case("config-missing-file", "--config path that does not exist", REFUSE, "names the path"),
    Case("config-unknown-key", "--config file with a key EvalConfig lacks", REFUSE, "names the key and the file"),
    Case("override-unknown-key", "key=value override of an unknown key (linear.nc=3)", REFUSE, "names the key"),
    Case("override-bad-type", "key=value override of the wrong type (batch_size=many)", REFUSE, "names key, value"),
    Case("precision-fp8", "precision=fp8", REFUSE, "before any extraction; lists fp32, bf16, fp16"),
    Case("precision-fp16-cpu", "precision=fp16 device=cpu", REFUSE, "before any extraction; suggests bf16"),
    Case("batch-size-zero", "batch_size=0", REFUSE, "names batch_size, says it must be >= 1"),
    Case("input-size-negative", "max_input_size=-8", REFUSE, "names max_input_size"),
    Case("linear-grid-empty", "linear.n_c=0", REFUSE, "names linear.n_c"),
    Case("knn-k-zero", "knn.ks=[0,5]", REFUSE, "names knn.ks"),
    # --- names ----------------------------------------------------------------------------------------------------
    Case("unknown-task", "--tasks lfw-face", REFUSE, "suggests lfw-faces"),
    Case("unknown-backbone", "backbone mobilenetv2_100.packaged", REFUSE, "suggests the packaged name"),
    Case("unknown-protocol", "--protocols svm", REFUSE, "names svm"),
    # --- output and cache locations -------------------------------------------------------------------------------
    Case("out-is-file", "--out below a regular file", REFUSE, "not writable; choose another --out"),
    Case("cache-dir-is-file", "--cache-dir naming a regular file", REFUSE, "before extraction; --cache-dir"),
    # --- weights files --------------------------------------------------------------------------------------------
    Case("weights-zero-byte", "backbone weights: an empty .safetensors file", REFUSE, "names the file"),
    Case("weights-truncated", "backbone weights: a .safetensors file cut in half", REFUSE, "names the file"),
    Case("weights-wrong-arch", "test_efficientnet weights given to test_resnet", REFUSE, "missing/unexpected keys"),
    Case("weights-unknown-suffix", "backbone weights: a .npy file", REFUSE, "lists the readable suffixes"),
    # --- custom task cards and their data -------------------------------------------------------------------------
    Case("card-unknown-key", "task card with a misspelt key (clases)", REFUSE, "names the key, lists allowed"),
    Case("card-malformed-yaml", "task card that is not valid YAML", REFUSE, "names the card"),
    Case("card-missing", "--task-card path that does not exist", REFUSE, "names the path"),
    Case("labels-outside-classes", "CSV label not in the card's classes", REFUSE, "names the row and label"),
    Case("csv-duplicate-path", "CSV listing one image twice", REFUSE, "names both rows"),
    Case("csv-missing-column", "CSV without a label column", REFUSE, "shows the header it needs"),
    Case("csv-missing-image", "CSV row naming a file that does not exist", REFUSE, "names the row and path"),
    Case("imagefolder-empty", "ImageFolder root with class folders but no images", REFUSE, "names the folder"),
    Case("imagefolder-non-image", "a .jpg file that holds text", REFUSE, "names the file"),
    Case("imagefolder-truncated", "a PNG cut in half", REFUSE, "names the file"),
    Case("image-float-mode", "a 32-bit float TIFF (mode F, no defined pixel range)", REFUSE, "names file and mode"),
    Case("hierarchy-unknown-class", "hierarchy YAML naming a class the task lacks", REFUSE, "names the class"),
    Case("hierarchy-malformed-yaml", "hierarchy file with a YAML syntax error", REFUSE, "names the file and line"),
    # --- leaderboard ----------------------------------------------------------------------------------------------
    Case("build-manifest-mismatch", "build --validate against a manifest with another digest", REFUSE,
         "names the record and manifest; writes nothing"),
    Case("build-no-readable-records", "build on a folder whose only record is corrupt", REFUSE, "says none readable"),
    # --- recoveries -----------------------------------------------------------------------------------------------
    Case("cache-entry-truncated", "feature-cache entry cut in half", RECOVER, "named, re-extracted, same score"),
    Case("cache-entry-bitflip", "feature-cache entry with flipped bytes", RECOVER, "named, re-extracted, same score"),
    Case("cache-entry-foreign", "feature-cache entry holding another split's features", RECOVER,
         "not trusted: re-extracted, same score"),
    Case("record-truncated-eval", "truncated record JSON, then `unirep eval` again", RECOVER,
         "named, recomputed; the other records untouched"),
    Case("record-bad-field-eval", "record with a string score, then `unirep eval` again", RECOVER,
         "named, recomputed; the other records untouched"),
    Case("record-corrupt-build", "truncated record JSON, then `unirep build`", RECOVER, "named; the others built"),
    Case("stale-temp-files", "temp files a killed writer left in records/ and the cache", RECOVER,
         "ignored by eval and build"),
    Case("broken-pipe", "`unirep list tasks | head`: stdout closed early", RECOVER, "no traceback, exit 141"),
    Case("concurrent-writers", "two `unirep eval` writing one out dir at once", RECOVER,
         "second waits; both finish; one intact record per job, computed once"),
    Case("sigkill-extraction", "SIGKILL at the 2nd batch of an extraction, then re-run", RECOVER,
         "no torn file; finished records not recomputed"),
    Case("sigkill-probing", "SIGKILL as the 2nd probe starts, then re-run", RECOVER,
         "no torn file; finished record kept; features read from the cache"),
    Case("image-cmyk", "ImageFolder of CMYK JPEGs", RECOVER, "read as RGB, colours kept"),
    Case("image-16bit", "ImageFolder of 16-bit grey PNGs", RECOVER, "scaled to 8 bits (not clipped at 255)"),
    Case("imagefolder-stray-files", "notes.txt and .DS_Store among the images", RECOVER, "ignored"),
]
CASES = {case.id: case for case in CATALOGUE}
QUICK = ["max_input_size=16", "linear.n_c=3"]
DIGITS = "sklearn-digits"


# --- shared fixtures and checks ---------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("UNIREP_QUIET", "1")  # no progress bars on stderr: the one error line is all there is
    monkeypatch.delenv(ENV_FAULT, raising=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run: raw pixels on sklearn-digits, linear + kNN records, a warm feature cache."""
    root = tmp_path_factory.mktemp("finished")
    out, cache = root / "out", root / "cache"
    os.environ["UNIREP_QUIET"] = "1"
    assert main(["eval", "raw-pixels", "--tasks", DIGITS, "--protocols", "linear,knn", "--out", str(out),
                 "--cache-dir", str(cache), *QUICK]) == 0
    return out, cache


def snapshot(*roots: Path) -> dict:
    """Every file under `roots`: its bytes, inode and mtime (a rewrite with equal bytes still shows)."""
    state = {}
    for root in roots:
        if root.is_file():
            state[str(root)] = _file_state(root)
        for path in sorted(root.rglob("*")) if root.is_dir() else []:
            if path.is_file():
                state[str(path)] = _file_state(path)
    return state


def _file_state(path: Path) -> tuple:
    stat = path.stat()
    return path.read_bytes(), stat.st_ino, stat.st_mtime_ns


def records_by_job(out: Path) -> dict[tuple, Path]:
    return {(r.backbone, r.task, r.protocol, r.seed): p for p in sorted((out / "records").rglob("*.json"))
            for r in [read_record(p)]}


def temp_files(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*.tmp")]


def copy_run(finished, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    return out


def cli(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    environment = {**os.environ, "UNIREP_QUIET": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "unirep.cli", *args], env=environment, **kwargs)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# --- refusals: one table-driven test ----------------------------------------------------------------------------
@dataclass
class Ctx:
    """Where a refusal case builds its bad input: `out` is a copy of a finished run, `cache` the warm cache."""

    tmp: Path
    out: Path
    cache: Path
    must_not_exist: list[Path] = field(default_factory=list)  # e.g. a fresh --out: refused before any work

    def fresh_out(self, argv: list[str]) -> list[str]:
        """`argv` with a new --out that a refusal before any work never creates."""
        fresh = self.tmp / "fresh-out"
        self.must_not_exist.append(fresh)
        argv[argv.index("--out") + 1] = str(fresh)
        return argv

    def eval(self, *extra: str, protocols: str = "linear", tasks: str = DIGITS, backbone: str = "raw-pixels"):
        items = [backbone] if backbone else []
        return ["eval", *items, "--tasks", tasks, "--protocols", protocols, "--out", str(self.out), "--cache-dir",
                str(self.cache), *QUICK, *extra]

    def write(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def card(self, data: dict, **fields) -> tuple[Path, str]:
        name = f"fault-{uuid.uuid4().hex[:8]}"  # the task registry is process-wide: one name per card
        path = self.write(f"{name}.yaml", yaml.safe_dump({"name": name, "description": "fault case", "data": data,
                                                          **fields}))
        return path, name

    def custom_eval(self, card: Path, name: str) -> list[str]:
        return self.eval("--task-card", str(card), tasks=name)


REFUSALS: dict[str, Callable[[Ctx], tuple[list[str], list[str]]]] = {}


def refusal(case_id: str):
    """Register how case `case_id` builds its input: returns (argv, fragments the error line must hold)."""
    assert CASES[case_id].outcome == REFUSE

    def register(build):
        REFUSALS[case_id] = build
        return build

    return register


def images(root: Path, per_class: dict[str, int], size: int = 8) -> None:
    """Small distinct RGB PNGs under root/<class>/<i>.png."""
    for c, (label, n) in enumerate(per_class.items()):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (size, size), (40 * c + 5 * i, 100, 200 - 5 * i)).save(root / label / f"{i}.png")


def csv_task(ctx: Ctx, lines: list[str], **fields) -> tuple[Path, str]:
    images(ctx.tmp / "img", {"a": 4, "b": 4})
    table = ctx.write("labels.csv", "\n".join(lines) + "\n")
    return ctx.card({"format": "csv", "csv": str(table), "root": str(ctx.tmp / "img")}, **fields)


GOOD_ROWS = [f"{c}/{i}.png,{c}" for c in "ab" for i in range(4)]


@refusal("config-malformed-yaml")
def _(ctx):
    path = ctx.write("bad.yaml", "backbones: [raw-pixels\ntasks: [sklearn-digits]\n")
    return ctx.fresh_out(ctx.eval("--config", str(path), backbone="")), [str(path), "line", "YAML"]


@refusal("config-not-mapping")
def _(ctx):
    path = ctx.write("list.yaml", "- raw-pixels\n- sklearn-digits\n")
    return ctx.fresh_out(ctx.eval("--config", str(path), backbone="")), [str(path), "mapping"]


@refusal("config-missing-file")
def _(ctx):
    return ctx.fresh_out(ctx.eval("--config", str(ctx.tmp / "nope.yaml"))), ["nope.yaml", "does not exist"]


@refusal("config-unknown-key")
def _(ctx):
    path = ctx.write("extra.yaml", "backbones: [raw-pixels]\nbogus_key: 1\n")
    return ctx.fresh_out(ctx.eval("--config", str(path), backbone="")), ["bogus_key", str(path)]


@refusal("override-unknown-key")
def _(ctx):
    return ctx.fresh_out(ctx.eval("linear.nc=3")), ["linear.nc", "command line"]


@refusal("override-bad-type")
def _(ctx):
    return ctx.fresh_out(ctx.eval("batch_size=many")), ["batch_size", "many"]


@refusal("precision-fp8")
def _(ctx):
    return ctx.fresh_out(ctx.eval("precision=fp8")), ["precision", "fp8", "fp32, bf16, fp16"]


@refusal("precision-fp16-cpu")
def _(ctx):
    return ctx.fresh_out(ctx.eval("precision=fp16", "device=cpu")), ["fp16", "bf16"]


@refusal("batch-size-zero")
def _(ctx):
    return ctx.fresh_out(ctx.eval("batch_size=0")), ["batch_size", ">= 1"]


@refusal("input-size-negative")
def _(ctx):
    return ctx.fresh_out(ctx.eval("max_input_size=-8")), ["max_input_size", "-8"]


@refusal("linear-grid-empty")
def _(ctx):
    return ctx.fresh_out(ctx.eval("linear.n_c=0")), ["linear.n_c", ">= 1"]


@refusal("knn-k-zero")
def _(ctx):
    return ctx.fresh_out(ctx.eval("knn.ks=[0,5]", protocols="knn")), ["knn.ks", ">= 1"]


@refusal("unknown-task")
def _(ctx):
    return ctx.eval(tasks="lfw-face"), ["lfw-face", "did you mean lfw-faces"]


@refusal("unknown-backbone")
def _(ctx):
    return ctx.eval(backbone="mobilenetv2_100.packaged"), ["mobilenetv2_100.packaged_in1k"]


@refusal("unknown-protocol")
def _(ctx):
    return ctx.eval(protocols="svm"), ["unknown protocol 'svm'"]


@refusal("out-is-file")
def _(ctx):
    blocker = ctx.write("blocker", "x")
    argv = ctx.eval()
    argv[argv.index("--out") + 1] = str(blocker / "out")
    return argv, ["not writable", "--out"]


@refusal("cache-dir-is-file")
def _(ctx):
    blocker = ctx.write("cache-file", "x")
    argv = ctx.eval(backbone="random:test_resnet")  # not cached anywhere: a refusal after extraction would show
    argv[argv.index("--cache-dir") + 1] = str(blocker)
    return ctx.fresh_out(argv), [str(blocker), "--cache-dir"]


def weights_config(ctx: Ctx, name: str, weights: Path) -> list[str]:
    config = ctx.write("weights.yaml", yaml.safe_dump({"backbones": [{"name": name, "weights": str(weights)}]}))
    return ctx.eval("--config", str(config), backbone="")


def real_weights(arch: str) -> dict:
    import timm

    return timm.create_model(arch, pretrained=False).state_dict()


@refusal("weights-zero-byte")
def _(ctx):
    path = ctx.write("empty.safetensors", "")
    return weights_config(ctx, "test_resnet", path), [str(path), "safetensors"]


@refusal("weights-truncated")
def _(ctx):
    from safetensors.torch import save_file

    path = ctx.tmp / "cut.safetensors"
    save_file(real_weights("test_resnet"), str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return weights_config(ctx, "test_resnet", path), [str(path), "not a readable safetensors file"]


@refusal("weights-wrong-arch")
def _(ctx):
    from safetensors.torch import save_file

    path = ctx.tmp / "effnet.safetensors"
    save_file(real_weights("test_efficientnet"), str(path))
    return weights_config(ctx, "test_resnet", path), [str(path), "does not fit", "missing"]


@refusal("weights-unknown-suffix")
def _(ctx):
    path = ctx.tmp / "weights.npy"
    np.save(path, np.zeros(3))
    return weights_config(ctx, "test_resnet", path), [str(path), ".safetensors"]


@refusal("card-unknown-key")
def _(ctx):
    images(ctx.tmp / "photos", {"a": 3, "b": 3})
    card, name = ctx.card({"format": "imagefolder", "root": "photos"}, clases=["a", "b"])
    return ctx.custom_eval(card, name), [str(card), "clases", "allowed"]


@refusal("card-malformed-yaml")
def _(ctx):
    card = ctx.write("broken-card.yaml", "name: x\ndata: {format: imagefolder, root: [\n")
    return ctx.custom_eval(card, "x"), [str(card)]


@refusal("card-missing")
def _(ctx):
    return ctx.custom_eval(ctx.tmp / "no-card.yaml", "x"), ["no-card.yaml"]


@refusal("labels-outside-classes")
def _(ctx):
    card, name = csv_task(ctx, ["path,label", *GOOD_ROWS[:-1], "b/3.png,c"], classes=["a", "b"])
    return ctx.custom_eval(card, name), ["labels.csv row 9", "'c'", "classes"]


@refusal("csv-duplicate-path")
def _(ctx):
    card, name = csv_task(ctx, ["path,label", *GOOD_ROWS, "a/0.png,a"])
    return ctx.custom_eval(card, name), ["labels.csv row 10 repeats labels.csv row 2"]


@refusal("csv-missing-column")
def _(ctx):
    card, name = csv_task(ctx, ["path", *(row.split(",")[0] for row in GOOD_ROWS)])
    return ctx.custom_eval(card, name), ["labels.csv", "path,label"]


@refusal("csv-missing-image")
def _(ctx):
    card, name = csv_task(ctx, ["path,label", *GOOD_ROWS, "a/9.png,a"])
    return ctx.custom_eval(card, name), ["labels.csv row 10", "a/9.png", "not found"]


@refusal("imagefolder-empty")
def _(ctx):
    for label in "ab":
        (ctx.tmp / "photos" / label).mkdir(parents=True)
    card, name = ctx.card({"format": "imagefolder", "root": "photos"})
    return ctx.custom_eval(card, name), [str(ctx.tmp / "photos"), "no images"]


@refusal("imagefolder-non-image")
def _(ctx):
    images(ctx.tmp / "photos", {"a": 3, "b": 3})
    fake = ctx.write("photos/b/fake.jpg", "this is not a JPEG\n")
    card, name = ctx.card({"format": "imagefolder", "root": "photos"})
    return ctx.custom_eval(card, name), [str(fake), "unreadable"]


@refusal("imagefolder-truncated")
def _(ctx):
    images(ctx.tmp / "photos", {"a": 3, "b": 3})
    cut = ctx.tmp / "photos" / "a" / "1.png"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # incompressible: cut = torn
    Image.fromarray(noise).save(cut)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    card, name = ctx.card({"format": "imagefolder", "root": "photos"})
    return ctx.custom_eval(card, name), [str(cut), "unreadable"]


@refusal("image-float-mode")
def _(ctx):
    images(ctx.tmp / "photos", {"a": 3, "b": 3})
    odd = ctx.tmp / "photos" / "a" / "float.tif"
    Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)).save(odd)
    card, name = ctx.card({"format": "imagefolder", "root": "photos"})
    return ctx.custom_eval(card, name), [str(odd), "mode F"]


@refusal("hierarchy-unknown-class")
def _(ctx):
    from unirep.sources.label_sets import HIERARCHIES_DIR

    raw = yaml.safe_load((HIERARCHIES_DIR / "fashion-mnist.yaml").read_text())
    raw["parents"]["Jumper"] = "tops"  # Fashion-MNIST has a "Pullover", no "Jumper"
    path = ctx.write("hierarchy.yaml", yaml.safe_dump(raw))
    return train_source_with_hierarchy(ctx, path), [str(path), "Jumper"]


def train_source_with_hierarchy(ctx: Ctx, hierarchy: Path) -> list[str]:
    return ["train-source", "reference", f"out={ctx.out / 'source'}", "data.train_size=100", "data.val_size=50",
            "optim.epochs=1",
            f"label_sets=[{{kind: original}}, {{kind: hierarchy, level: 1, hierarchy: '{hierarchy}'}}]"]


@refusal("hierarchy-malformed-yaml")
def _(ctx):
    path = ctx.write("hierarchy.yaml", "task: fashion-mnist\nparents: {T-shirt/top: tops, Trouser: [\n")
    return train_source_with_hierarchy(ctx, path), [str(path), "line 3"]


@refusal("build-manifest-mismatch")
def _(ctx):
    manifests = ctx.tmp / "manifests"
    manifests.mkdir()
    from unirep.leaderboard.validate import MANIFESTS_DIR

    published = json.loads((MANIFESTS_DIR / f"{DIGITS}.json").read_text())
    (manifests / f"{DIGITS}.json").write_text(json.dumps({**published, "digest": "0" * 64}))
    return (["build", str(ctx.out), "--out", str(ctx.out / "board"), "--n-boot", "0", "--validate", "--manifests",
             str(manifests)], ["nothing was written"])


@refusal("build-no-readable-records")
def _(ctx):
    lone = ctx.tmp / "lone"
    shutil.copytree(ctx.out, lone)
    for path in list((lone / "records").rglob("*.json"))[1:]:
        path.unlink()
    victim = next((lone / "records").rglob("*.json"))
    victim.write_text(victim.read_text()[:50])
    return ["build", str(lone), "--out", str(ctx.out / "board"), "--n-boot", "0"], ["no readable result records"]


@pytest.mark.parametrize("case_id", [c.id for c in CATALOGUE if c.outcome == REFUSE])
def test_refusal(case_id, finished, tmp_path, capsys):
    """Exit 2, exactly one error line holding the case's fragments, nothing written before changed."""
    ctx = Ctx(tmp_path / "input", copy_run(finished, tmp_path), finished[1])
    ctx.tmp.mkdir()
    argv, fragments = REFUSALS[case_id](ctx)
    capsys.readouterr()
    before = snapshot(ctx.out, ctx.cache)
    code = main(argv)
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if ": error: " in line]
    assert code == 2, err
    assert len(error_lines) == 1 and "Traceback" not in err, err
    assert all(line.startswith(f"unirep {argv[0]}: ") for line in err.splitlines()), err
    missing = [f for f in fragments if f not in error_lines[0]]
    assert not missing, f"{missing} not in: {error_lines[0]}"
    assert snapshot(ctx.out, ctx.cache) == before, "a refused command changed files written before"
    assert not [p for p in ctx.must_not_exist if p.exists()], "refused only after work had started"


# --- recoveries -------------------------------------------------------------------------------------------------
COVERED: set[str] = set()


def covers(*case_ids: str):
    for case_id in case_ids:
        assert CASES[case_id].outcome == RECOVER and case_id not in COVERED
        COVERED.add(case_id)
    return lambda test: test


def cache_entry(cache: Path, split: str, backbone: str = "raw-pixels") -> Path:
    from unirep.backbones import create_backbone
    from unirep.features import ExtractionSettings, FeatureCache
    from unirep.tasks import create_task

    net, task = create_backbone(backbone, input_size=16), create_task(DIGITS)
    return FeatureCache(cache).path(FeatureCache.key(net.identity(), task.manifest, split, ExtractionSettings()))


def _truncate(entry: Path, other: Path) -> None:
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])


def _flip_bytes(entry: Path, other: Path) -> None:
    data = bytearray(entry.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    entry.write_bytes(bytes(data))


def _foreign(entry: Path, other: Path) -> None:
    shutil.copyfile(other, entry)  # a well-formed entry, but of the val split: the key says train


@covers("cache-entry-truncated", "cache-entry-bitflip", "cache-entry-foreign")
@pytest.mark.parametrize("damage", [_truncate, _flip_bytes, _foreign], ids=["truncated", "bitflip", "foreign"])
def test_corrupt_cache_entry_is_re_extracted(damage, finished, tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    shutil.copytree(finished[1], cache)
    entry = cache_entry(cache, "train")
    intact = np.load(entry)["features"].copy()
    damage(entry, cache_entry(cache, "val"))
    capsys.readouterr()
    assert main(["eval", "raw-pixels", "--tasks", DIGITS, "--protocols", "knn", "--out", str(out), "--cache-dir",
                 str(cache), *QUICK]) == 0
    err = capsys.readouterr().err
    assert str(entry) in err and "extracting again" in err and len(err.splitlines()) == 1, err
    record = read_record(records_by_job(out)[("raw-pixels", DIGITS, "knn", 0)])
    assert record.timings["extract_cached"] is False
    reference = read_record(records_by_job(finished[0])[("raw-pixels", DIGITS, "knn", 0)])
    assert record.score == reference.score and record.hyperparameters == reference.hyperparameters
    assert np.array_equal(np.load(entry)["features"], intact)  # the entry was rewritten, whole


@covers("record-truncated-eval", "record-bad-field-eval")
@pytest.mark.parametrize("damage", ["truncate", "string-score"])
def test_corrupt_record_is_named_and_recomputed_by_eval(damage, finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    jobs = records_by_job(out)
    victim, other = jobs[("raw-pixels", DIGITS, "knn", 0)], jobs[("raw-pixels", DIGITS, "linear", 0)]
    good = read_record(victim)
    if damage == "truncate":
        victim.write_text(victim.read_text()[:120])
    else:
        victim.write_text(json.dumps({**json.loads(victim.read_text()), "score": "high"}))
    kept = snapshot(other)
    capsys.readouterr()
    assert main(["eval", "raw-pixels", "--tasks", DIGITS, "--protocols", "linear,knn", "--out", str(out),
                 "--cache-dir", str(finished[1]), *QUICK]) == 0
    err = capsys.readouterr().err
    assert str(victim) in err and "computing it again" in err and len(err.splitlines()) == 1, err
    assert snapshot(other) == kept
    again = read_record(victim)
    assert again.score == good.score and again.timings["extract_cached"] is True


@covers("record-corrupt-build")
def test_corrupt_record_is_named_and_the_others_build(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    victim = records_by_job(out)[("raw-pixels", DIGITS, "linear", 0)]
    victim.write_text(victim.read_text()[:120])
    capsys.readouterr()
    assert main(["build", str(out), "--out", str(tmp_path / "board"), "--n-boot", "0"]) == 0
    err = capsys.readouterr().err
    assert f"skipped malformed record {victim}" in err
    rows = (tmp_path / "board" / "results-long.csv").read_text().splitlines()
    assert len(rows) == 2 and ",knn," in rows[1]


@covers("stale-temp-files")
def test_stale_temp_files_are_ignored(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    cache = tmp_path / "cache"
    shutil.copytree(finished[1], cache)
    record = records_by_job(out)[("raw-pixels", DIGITS, "linear", 0)]
    (record.parent / f".{record.name}.k1ll3d.tmp").write_text(record.read_text()[:100])
    entry = cache_entry(cache, "train")
    (entry.parent / f".{entry.name}.k1ll3d.tmp").write_bytes(entry.read_bytes()[:1000])
    kept = snapshot(*records_by_job(out).values())
    assert main(["eval", "raw-pixels", "--tasks", DIGITS, "--protocols", "linear,knn", "--out", str(out),
                 "--cache-dir", str(cache), *QUICK]) == 0
    assert snapshot(*records_by_job(out).values()) == kept
    assert main(["build", str(out), "--out", str(tmp_path / "board"), "--n-boot", "0"]) == 0
    assert "2 records (0 skipped)" in capsys.readouterr().out


@covers("broken-pipe")
def test_broken_pipe_exits_quietly():
    process = cli("list", "tasks", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before the first line, as `| head` is after its lines
    _, err = process.communicate(timeout=120)
    assert err.decode() == "" and process.returncode == 141


@covers("concurrent-writers")
def test_two_writers_on_one_out_dir(finished, tmp_path):
    out, release = tmp_path / "out", tmp_path / "go"
    args = ["eval", "raw-pixels", "--tasks", DIGITS, "--protocols", "knn", "--out", str(out), "--cache-dir",
            str(finished[1]), *QUICK]
    logs = {name: (open(tmp_path / f"{name}.out", "w"), open(tmp_path / f"{name}.err", "w")) for name in "ab"}
    # Both start at once (their imports overlap); the first holds its lock at its first probe, the second waits
    # to take its lock until the first holds one: a fixed order whatever the machine's load.
    first = cli(*args, env={ENV_FAULT: f"probe:1:wait={release}"}, stdout=logs["a"][0], stderr=logs["a"][1])
    second = cli(*args, env={ENV_FAULT: f"records-lock:1:wait={release}.reached"}, stdout=logs["b"][0],
                 stderr=logs["b"][1])
    try:
        wait_for(lambda: "waiting" in (tmp_path / "b.err").read_text() or second.poll() is not None
                 or first.poll() is not None, "the second run to wait")
    finally:
        release.touch()
    assert first.wait(timeout=180) == 0
    after_first = snapshot(out / "records")
    assert second.wait(timeout=180) == 0
    for handles in logs.values():
        for handle in handles:
            handle.close()
    err = (tmp_path / "b.err").read_text()
    assert "another run" in err and "waiting" in err, err
    assert snapshot(out / "records") == after_first  # the second run computed nothing again
    assert sorted(records_by_job(out)) == [("raw-pixels", DIGITS, "knn", 0)]
    assert not temp_files(out)
    assert "1 records" in (tmp_path / "a.out").read_text() and "1 records" in (tmp_path / "b.out").read_text()


def _killed_then_resumed(finished, tmp_path, fault: str, backbones: list[str], out: Path):
    args = ["eval", *backbones, "--tasks", DIGITS, "--protocols", "knn", "--out", str(out), "--cache-dir",
            str(tmp_path / "cache"), *QUICK, "seeds=[0,1]"]
    killed = cli(*args, env={ENV_FAULT: fault}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = killed.communicate(timeout=240)
    assert killed.returncode == -signal.SIGKILL, err.decode()
    return args


@covers("sigkill-extraction")
def test_sigkill_during_extraction_then_rerun(finished, tmp_path):
    out = copy_run(finished, tmp_path)
    shutil.copytree(finished[1], tmp_path / "cache")
    done, entries = snapshot(out / "records"), snapshot(tmp_path / "cache")
    # raw pixels' knn seed 1 runs on cached features and is written; then test_resnet's extraction dies at batch 2
    args = _killed_then_resumed(finished, tmp_path, "extract-batch:2:kill", ["raw-pixels", "random:test_resnet"], out)
    after_kill = snapshot(out / "records")
    assert {k: v for k, v in after_kill.items() if k in done} == done
    assert sorted(records_by_job(out)) == sorted([*records_by_job(finished[0]), ("raw-pixels", DIGITS, "knn", 1)])
    assert snapshot(tmp_path / "cache") == entries  # no entry torn, none half-written
    assert not temp_files(out, tmp_path / "cache")
    assert main(args) == 0
    assert {k: v for k, v in snapshot(out / "records").items() if k in after_kill} == after_kill  # not recomputed
    assert sorted(b for b, *_ in records_by_job(out)) == ["random:test_resnet"] * 2 + ["raw-pixels"] * 3
    assert not load_records(out)[1] and not temp_files(out, tmp_path / "cache")


@covers("sigkill-probing")
def test_sigkill_during_probing_then_rerun(finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished[1], tmp_path / "cache")
    args = _killed_then_resumed(finished, tmp_path, "probe:2:kill", ["raw-pixels"], out)
    jobs = records_by_job(out)
    assert sorted(jobs) == [("raw-pixels", DIGITS, "knn", 0)] and not temp_files(out)
    kept = snapshot(*jobs.values())
    assert main(args) == 0
    assert snapshot(*jobs.values()) == kept
    resumed = read_record(records_by_job(out)[("raw-pixels", DIGITS, "knn", 1)])
    assert resumed.timings["extract_cached"] is True  # the features the killed run had cached


def custom_task(tmp_path: Path, write_image: Callable[[Path, int, int], None], suffix: str) -> tuple[Path, str]:
    for c, label in enumerate("ab"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(4):
            write_image(tmp_path / "photos" / label / f"{i}{suffix}", c, i)
    name = f"fault-{uuid.uuid4().hex[:8]}"
    card = tmp_path / f"{name}.yaml"
    card.write_text(yaml.safe_dump({"name": name, "description": "fault case",
                                    "data": {"format": "imagefolder", "root": "photos"}}))
    return card, name


def eval_custom(card: Path, name: str, tmp_path: Path) -> None:
    assert main(["eval", "raw-pixels", "--task-card", str(card), "--tasks", name, "--protocols", "knn", "--out",
                 str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), *QUICK]) == 0
    assert [r.task for r in load_records(tmp_path / "out")[0]] == [name]


def task_pixels(name: str) -> dict[str, np.ndarray]:
    from unirep.tasks import create_task

    task = create_task(name)
    return {i: np.asarray(task.split(s)[k][0]) for s in ("train", "val", "test")
            for k, i in enumerate(task.split(s).ids)}


@covers("image-cmyk")
def test_cmyk_jpegs_are_read_as_rgb(tmp_path):
    def colour(c: int, i: int) -> tuple[int, int, int]:
        return (200 - 40 * i, 40 + 150 * c, 90 + 20 * i)

    def write(path, c, i):
        Image.new("RGB", (16, 16), colour(c, i)).convert("CMYK").save(path, quality=95)

    card, name = custom_task(tmp_path, write, ".jpg")
    assert Image.open(next((tmp_path / "photos" / "a").iterdir())).mode == "CMYK"
    eval_custom(card, name, tmp_path)
    for image_id, pixels in task_pixels(name).items():
        label, index = image_id.split("/")
        expected = np.array(colour("ab".index(label), int(index[0])))
        assert pixels.shape == (16, 16, 3) and np.abs(pixels.astype(int) - expected).max() <= 3


@covers("image-16bit")
def test_16_bit_pngs_are_scaled_not_clipped(tmp_path):
    def grey16(c: int, i: int) -> np.ndarray:
        return (np.arange(64, dtype=np.uint16).reshape(8, 8) * (1000 + 20 * i) // (1 + c)).astype(np.uint16)

    def write(path, c, i):
        Image.fromarray(grey16(c, i)).save(path)

    card, name = custom_task(tmp_path, write, ".png")
    assert Image.open(next((tmp_path / "photos" / "a").iterdir())).mode.startswith("I;16")
    eval_custom(card, name, tmp_path)
    for image_id, pixels in task_pixels(name).items():
        label, index = image_id.split("/")
        expected = np.round(grey16("ab".index(label), int(index[0])) / 257.0)  # 65535 -> 255
        assert np.array_equal(pixels, np.repeat(expected[..., None], 3, axis=2).astype(np.uint8))


@covers("imagefolder-stray-files")
def test_stray_files_in_an_imagefolder_are_ignored(tmp_path):
    def write(path, c, i):
        Image.new("RGB", (8, 8), (30 * i, 200 * c, 7)).save(path)

    card, name = custom_task(tmp_path, write, ".png")
    (tmp_path / "photos" / "a" / "notes.txt").write_text("taken in May")
    (tmp_path / "photos" / "b" / ".DS_Store").write_bytes(b"\0\1\2")
    eval_custom(card, name, tmp_path)
    assert sorted(task_pixels(name)) == [f"{label}/{i}.png" for label in "ab" for i in range(4)]


def test_every_case_has_one_test():
    ids = [case.id for case in CATALOGUE]
    assert len(ids) == len(set(ids)) and len(ids) >= 30
    assert set(REFUSALS) == {c.id for c in CATALOGUE if c.outcome == REFUSE}
    assert COVERED == {c.id for c in CATALOGUE if c.outcome == RECOVER}
