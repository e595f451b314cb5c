"""`unirep inspect` end to end through the CLI: packaged MobileNetV2 at 64 px next to a small random ViT on an
offline task (the A-vs-B report, CKA between them), one backbone alone, and bad input refused in one line with exit
code 2 before any work (unknown layer, unknown section, an out dir that cannot be written, a spatial section on a
backbone without maps)."""

from __future__ import annotations

import json

import pytest

from unirep.cli import main

MOBILENET = "mobilenetv2_100.packaged_in1k"
VIT = "random:vit_tiny_patch16_224"
FAST = ["linear.n_c=2", "linear.c_min_exp=-2", "linear.c_max_exp=-1", "exemplars.units=2", "exemplars.top_k=3"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "inspect-feature-cache"  # shared with test_context in one session


def inspect(out, *items, cache=None):
    argv = ["inspect", *items, "--task", "sklearn-digits", "--out", str(out), "--images", "24", "--no-progress",
            *FAST]
    if cache is not None:
        argv.append(f"cache_dir={cache}")
    return main(argv)


@pytest.fixture(scope="module")
def pair_report(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("inspect-pair")
    assert inspect(out, MOBILENET, VIT, "--sections", "representation,exemplars", "--layers", "stage1,stage3",
                   cache=cache) == 0
    return out


def test_pair_report_has_both_backbones_every_section_and_cka(pair_report):
    data = json.loads((pair_report / "inspect.json").read_text())
    labels = [b["label"] for b in data["backbones"]]
    assert labels == [MOBILENET, VIT]
    assert data["task"]["manifest"]["task"] == "sklearn-digits" and len(data["task"]["manifest"]["digest"]) == 64
    assert data["backbones"][0]["input_size"] == data["backbones"][1]["input_size"] == 64
    assert data["backbones"][1]["layers"] == {"stage1": "model.blocks.1", "stage3": "model.blocks.3"}
    assert set(data["sections"]) == {"representation", "exemplars"} and not data["failed"]
    for backbone in data["backbones"]:
        assert backbone["classifier_agreement"]["share"] >= 0.99
        assert backbone["probe"]["C"] in (pytest.approx(0.01), pytest.approx(0.1))
    rep = data["sections"]["representation"]
    for label in labels:
        numbers = rep["results"][label]["numbers"]["features"]
        assert 1 <= numbers["rankme"] <= min(numbers["n"], numbers["d"]) and numbers["nc1"] > 0
    cka = rep["differences"]["numbers"]
    assert 0 < cka["cka_features"] < 1
    assert cka["cka_layers"]["rows"] == ["stage1", "stage3"] and len(cka["cka_layers"]["values"]) == 2
    exemplars = data["sections"]["exemplars"]["results"][VIT]["numbers"]["layers"]["stage3"]
    assert exemplars["receptive_field"]["theoretical_size"] == [64, 64]  # attention sees every patch
    assert len(exemplars["units"]) == 2 and all(len(u["top"]) == 3 for u in exemplars["units"])
    page = (pair_report / "report.html").read_text()
    assert page.count('class="differences"') == 2 and page.count('class="side"') == 4
    assert data["versions"]["torch"] and data["seed"] == 0 and data["config"]["images"] == 24


def test_one_backbone_report(tmp_path, cache, pair_report):
    out = tmp_path / "one"
    assert inspect(out, MOBILENET, "--sections", "representation", cache=cache) == 0
    data = json.loads((out / "inspect.json").read_text())
    assert [b["label"] for b in data["backbones"]] == [MOBILENET]
    assert "differences" not in data["sections"]["representation"]
    assert list(data["sections"]["representation"]["results"][MOBILENET]["numbers"]["layers"]) == [
        f"stage{i}" for i in range(5)]


@pytest.mark.parametrize("items, expected", [
    ((MOBILENET, "--layers", "stage9"), "has no layer 'stage9': valid layers are stage0 (= model.blocks.0)"),
    ((MOBILENET, "--sections", "exemplar"), "unknown section 'exemplar': did you mean exemplars?"),
    (("raw-pixels", "--sections", "exemplars"), "section 'exemplars' needs spatial activation maps"),
    ((MOBILENET, VIT, "raw-pixels"), "takes one backbone, or two to compare (A B), got 3"),
    # Refused before the backbone is even looked up: "no-such-net" would fail later, with another message.
    (("no-such-net", "occlusion.windw=8"), "section 'occlusion' has no setting(s) ['windw']: its settings are"),
    (("no-such-net", "representation.split=test"), "section 'representation' has no setting(s) ['split']"),
], ids=["layer", "section", "spatial", "three", "setting", "setting-representation"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, items, expected, cache):
    out = tmp_path / "out"
    code = inspect(out, *items, cache=cache)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    message = err[-1]
    assert message.startswith("unirep inspect: error: ") and expected in message
    assert not (out / "report.html").exists() and not (out / "inspect.json").exists()


def test_an_out_dir_that_cannot_be_written_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert inspect(blocker / "report", MOBILENET) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "output directory" in message and "not writable" in message and "--out" in message


def test_task_and_out_are_required_and_backbone_options_may_come_first(tmp_path, capsys):
    assert main(["inspect", MOBILENET]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs --task and --out" in err
    # a per-backbone option before --task: located by prefix parsing, which must not stop at the missing --task
    assert main(["inspect", "raw-pixels", "--input-size", "16", "--task", "sklearn-digts", "--out",
                 str(tmp_path / "out")]) == 2
    assert "did you mean sklearn-digits" in capsys.readouterr().err


def test_list_sections_names_them_in_report_order(capsys):
    assert main(["list", "sections"]) == 0
    names = capsys.readouterr().out.split()
    assert {"exemplars", "representation"} <= set(names)
    assert names.index("exemplars") < names.index("representation")  # the report's order, not alphabetical
