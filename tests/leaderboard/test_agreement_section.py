"""The leaderboard's estimator agreement: Kendall / weighted tau of each estimator against the linear probe (and
fine-tuning), per task with >= 3 backbones and averaged over tasks, in agreement.csv, leaderboard.md and the page.

The first test builds it from records written by `evaluate` on a real task (lfw-faces) with real backbones; the
others use synthetic records to cover several tasks, a fine-tune reference and a task with too few backbones."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from leaderboard_records import BACKBONES, SUITES, TASKS, make_record, write_grid
from scipy import stats
from test_page_browser import column_texts, wait_until_settled

from unirep.config import EvalConfig, load_config
from unirep.evaluate import evaluate
from unirep.leaderboard import build_leaderboard, write_leaderboard
from unirep.leaderboard.agreement import AGREEMENT_COLUMNS
from unirep.leaderboard.page import page_frame
from unirep.results import write_record

REAL_BACKBONES = [{"name": "raw-pixels", "input_size": 8}, {"name": "raw-pixels", "input_size": 4, "label": "raw4"},
                  {"name": "random:resnet10t", "input_size": 32}]
ESTIMATORS = ["logme", "nleep"]


class TableRows(HTMLParser):
    """Cell texts of every <table class="agreement"> row, keyed by the table's data-reference."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._reference, self._cell = None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("class") == "agreement":
            self._reference = attrs["data-reference"]
            self.tables[self._reference] = []
        elif self._reference and tag == "tr":
            self.tables[self._reference].append([])
        elif self._reference and tag in ("td", "th"):
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._reference][-1].append(self._cell.strip())
            self._cell = None
        elif tag == "table":
            self._reference = None


def page_tables(path: Path) -> dict[str, list[list[str]]]:
    parser = TableRows()
    parser.feed(path.read_text())
    return parser.tables


def taus(table: pd.DataFrame, estimator: str, reference: str) -> tuple[float, float]:
    """Direct scipy taus of the two score columns, the backbones in one fixed order."""
    pivot = table.pivot(index="backbone", columns="protocol", values="score").dropna(subset=[estimator, reference])
    x, y = pivot[estimator].to_numpy(), pivot[reference].to_numpy()
    return stats.kendalltau(x, y).statistic, stats.weightedtau(x, y).statistic


def test_agreement_from_real_records_equals_scipy(tmp_path):
    out = tmp_path / "run"
    cfg = load_config(EvalConfig, dotlist=[f"out={out}", f"cache_dir={tmp_path / 'cache'}", "tasks=[lfw-faces]",
                                           f"protocols=[linear,{','.join(ESTIMATORS)}]", "linear.n_c=5"],
                      backbones=REAL_BACKBONES)
    records = evaluate(cfg)
    assert len(records) == 3 * 3
    board = build_leaderboard([out], n_boot=0)
    write_leaderboard(board, tmp_path / "lb")

    csv = pd.read_csv(tmp_path / "lb" / "agreement.csv")
    assert list(csv.columns) == AGREEMENT_COLUMNS
    assert set(csv["reference"]) == {"linear"} and set(csv["estimator"]) == set(ESTIMATORS)
    scores = pd.DataFrame([(r.backbone, r.protocol, r.score) for r in records],
                          columns=["backbone", "protocol", "score"])
    for estimator in ESTIMATORS:
        kendall, weighted = taus(scores, estimator, "linear")
        rows = csv[csv["estimator"] == estimator].set_index("task")
        assert rows.loc["lfw-faces", "n_backbones"] == 3
        assert rows.loc["lfw-faces", "kendall_tau"] == pytest.approx(kendall, abs=1e-4)
        assert rows.loc["lfw-faces", "weighted_tau"] == pytest.approx(weighted, abs=1e-4)
        assert rows.loc["mean", "kendall_tau"] == pytest.approx(kendall, abs=1e-4) and rows.loc["mean", "n_tasks"] == 1

    markdown = (tmp_path / "lb" / "leaderboard.md").read_text()
    section = markdown.split("## Estimator agreement")[1]
    logme_row = next(line for line in section.splitlines() if line.startswith("| logme"))
    kendall, weighted = taus(scores, "logme", "linear")
    assert f"{kendall:+.2f} / {weighted:+.2f} (n=3)" in logme_row
    tables = page_tables(tmp_path / "lb" / "index.html")
    assert list(tables) == ["linear"]
    header, *rows = tables["linear"]
    assert header == ["estimator", "mean τ", "mean τw", "tasks", "lfw-faces"]
    assert rows[0] == ["logme", f"{kendall:+.2f}", f"{weighted:+.2f}", "1", f"{kendall:+.2f} / {weighted:+.2f} (n=3)"]


def synthetic_results(out: Path) -> None:
    """linear + finetune on every backbone and task; logme everywhere, NCE on three tasks, but on 'faces' for
    two backbones only (too few to compare)."""
    write_grid(out, protocols=("linear", "finetune"))
    rng = np.random.default_rng(0)
    for number, (backbone, (accuracy, _)) in enumerate(BACKBONES.items()):
        for task in TASKS:
            # Noisy in the backbones' accuracy, so the rankings partly agree, differently per task.
            value = accuracy + rng.normal(0.0, 0.15)
            write_record(out, make_record(backbone, task, "logme", metric="logme", score=value, val_score=None,
                                          hyperparameters={"name": "logme"}, extra={}, test_labels=None,
                                          test_predictions=None))
            if task != "faces" or number < 2:
                write_record(out, make_record(backbone, task, "nce", metric="nce", score=value + rng.normal(0.0, 0.3),
                                              val_score=None, hyperparameters={"name": "nce"}, extra={},
                                              test_labels=None, test_predictions=None))


def test_agreement_per_task_mean_and_finetune_reference(tmp_path):
    synthetic_results(tmp_path / "results")
    board = build_leaderboard([tmp_path / "results"], suites=SUITES, n_boot=0)
    write_leaderboard(board, tmp_path / "lb")
    csv = pd.read_csv(tmp_path / "lb" / "agreement.csv")
    long = pd.read_csv(tmp_path / "lb" / "results-long.csv")
    assert list(dict.fromkeys(csv["reference"])) == ["linear", "finetune"]
    # Scored protocols lead the leaderboard, estimators follow; by name within each group.
    assert board.protocols == ["finetune", "linear", "logme", "nce"]
    markdown = (tmp_path / "lb" / "leaderboard.md").read_text()
    headings = [line.split(" · ")[0][3:] for line in markdown.splitlines() if " · all tasks" in line]
    assert headings == board.protocols

    for reference in ("linear", "finetune"):
        for estimator in ("logme", "nce"):
            rows = csv[(csv["reference"] == reference) & (csv["estimator"] == estimator)].set_index("task")
            expected_tasks = sorted(TASKS) if estimator == "logme" else ["digits", "textures"]
            assert list(rows.index) == [*expected_tasks, "mean"]
            per_task = [taus(long[long["task"] == task], estimator, reference) for task in expected_tasks]
            assert rows.loc[expected_tasks, "kendall_tau"].tolist() == pytest.approx([k for k, _ in per_task],
                                                                                      abs=1e-4)
            assert rows.loc[expected_tasks, "weighted_tau"].tolist() == pytest.approx([w for _, w in per_task],
                                                                                       abs=1e-4)
            assert rows.loc["mean", "kendall_tau"] == pytest.approx(np.mean([k for k, _ in per_task]), abs=1e-4)
            assert rows.loc["mean", "n_tasks"] == len(expected_tasks)
            assert (rows.loc[expected_tasks, "n_backbones"] == len(BACKBONES)).all()
    assert any("faces have fewer than 3 backbones" in note for note in board.notes)

    markdown = (tmp_path / "lb" / "leaderboard.md").read_text()
    assert "### vs linear" in markdown and "### vs finetune" in markdown
    tables = page_tables(tmp_path / "lb" / "index.html")
    assert list(tables) == ["linear", "finetune"]
    nce = next(row for row in tables["finetune"][1:] if row[0] == "nce")
    header = tables["finetune"][0]
    assert nce[header.index("tasks")] == "2" and nce[header.index("faces")] == "–"
    assert nce[header.index("digits")].endswith("(n=4)")


def test_no_estimators_no_section(results_dir, tmp_path):
    board = build_leaderboard([results_dir], suites=SUITES, n_boot=0)
    write_leaderboard(board, tmp_path / "lb")
    assert pd.read_csv(tmp_path / "lb" / "agreement.csv").empty
    assert "Estimator agreement" not in (tmp_path / "lb" / "leaderboard.md").read_text()
    assert page_tables(tmp_path / "lb" / "index.html") == {}


def test_page_with_agreement_loads_in_a_browser(tmp_path, browser):
    synthetic_results(tmp_path / "results")
    board = build_leaderboard([tmp_path / "results"], suites=SUITES, n_boot=0)
    write_leaderboard(board, tmp_path / "lb")
    frame, _ = page_frame(board)
    browser.get((tmp_path / "lb" / "index.html").resolve().as_uri())
    wait_until_settled(browser)
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    # The main table still shows every row (estimator protocols included, without aggregates).
    assert len(column_texts(browser, 0)) == len(frame) and "logme" in set(frame["protocol"])
    shown = browser.execute_script(
        "return Array.from(document.querySelectorAll('table.agreement')).map(t => [t.dataset.reference, "
        "t.querySelectorAll('tbody tr').length, t.getBoundingClientRect().height > 0]);")
    assert shown == [["linear", 2, True], ["finetune", 2, True]]
