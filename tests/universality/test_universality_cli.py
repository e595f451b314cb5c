"""`unirep universality TABLE.csv` through unirep.cli.main: outputs and every input error."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from unirep.cli import main
from unirep.universality import compute_aggregates, read_score_table

CSV = """method,cub,voc07,c101,pets
ref,60,80,70,50
new,70,85,75,40
low,50,80,60,45
"""


def write(tmp_path, text: str, name: str = "scores.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_writes_csv_and_json_equal_to_compute_aggregates(tmp_path, capsys):
    table = write(tmp_path, CSV)
    prefix = tmp_path / "out" / "universality.v1"
    assert main(["universality", table, "--reference", "ref", "--out", str(prefix)]) == 0
    printed = capsys.readouterr().out
    assert "3 methods x 4 tasks" in printed and "mean_rank (lower is better)" in printed
    assert printed.index("\nnew ") < printed.index("\nref ") < printed.index("\nlow ")  # best mean first
    expected = compute_aggregates(read_score_table(table), reference="ref")
    written = pd.read_csv(tmp_path / "out" / "universality.v1.csv", index_col="method")
    pd.testing.assert_frame_equal(written, expected, check_exact=False, rtol=1e-12)
    payload = json.loads((tmp_path / "out" / "universality.v1.json").read_text())
    assert payload["reference"] == "ref" and payload["decathlon_emax"] == "reference"
    assert payload["tasks"] == ["cub", "voc07", "c101", "pets"]
    assert payload["results"]["new"]["mnrg"] == pytest.approx(100 * (1 / 6 + 0.25) / 2)
    assert len(payload["input_sha256"]) == 64


def test_aggregates_option_and_decathlon_convention(tmp_path, capsys):
    table = write(tmp_path, CSV)
    argv = ["universality", table, "--reference", "ref", "--aggregates", "borda,decathlon",
            "--decathlon-emax", "double_baseline", "--baseline", "low", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    assert "decathlon E_max: double_baseline (baseline: low)" in capsys.readouterr().out
    written = pd.read_csv(tmp_path / "r.csv", index_col="method")
    assert list(written.columns) == ["borda", "decathlon_double_baseline"]
    assert written.loc["low", "decathlon_double_baseline"] == pytest.approx(250.0 * 4)


def test_missing_cells(tmp_path, capsys):
    table = write(tmp_path, CSV.replace("new,70,", "new,,"))
    assert main(["universality", table, "--reference", "ref"]) == 2
    assert "1 missing (method, task) cell(s): (new, cub)" in capsys.readouterr().err
    assert main(["universality", table, "--reference", "ref", "--missing", "drop_tasks"]) == 0
    captured = capsys.readouterr()
    assert "warning: aggregating over 3 complete task(s) only; dropped 1 task(s) with missing scores: cub" in \
        captured.err
    assert "dropped tasks with missing scores: cub" in captured.out


@pytest.mark.parametrize(
    ("text", "argv", "message"),
    [
        (CSV.replace("pets\n", "pets,notes\n").replace("50\n", "50,baseline\n", 1), ["--reference", "ref"],
         "line 2: column 'notes' has a non-numeric value 'baseline' in row 'ref'"),
        (CSV, ["--reference", "resnet50"], "reference 'resnet50' is not a method of the score table; methods: "
                                           "ref, new, low"),
        (CSV, ["--aggregates", "mnrg"], "aggregate 'mnrg' needs a reference method: pass reference=NAME"),
        (CSV, ["--aggregates", "meen"], "unknown aggregate 'meen': did you mean mean"),
        (CSV, ["--reference", "ref", "--s-max", "75"], "score 80.0 of method 'ref' on task 'voc07' is outside"),
        (CSV.replace("ref,60,80,70,50", "ref,60,80,70"), [], "line 2: 4 cells but the header has 5"),
        (CSV.replace("low,", "new,"), [], "line 4: method 'new' appears twice"),
        (CSV.replace("c101", "cub"), [], "duplicate task column(s) ['cub']"),
        ("method\n", [], "needs a header"),
    ],
)
def test_input_errors(tmp_path, capsys, text, argv, message):
    assert main(["universality", write(tmp_path, text), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unirep universality: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_missing_file(tmp_path, capsys):
    assert main(["universality", str(tmp_path / "nope.csv")]) == 2
    assert "cannot read the score table" in capsys.readouterr().err


def test_read_score_table_missing_markers(tmp_path):
    table = read_score_table(write(tmp_path, "\ufeffmethod,a,b\nx,NA,1.5\ny, - ,nan\n"))
    assert table.index.tolist() == ["x", "y"] and table.columns.tolist() == ["a", "b"]
    assert table.isna().to_numpy().tolist() == [[True, False], [True, True]]
