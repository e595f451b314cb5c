"""`unirep explain`'s dispatch: a detection task goes to "detections", any other task to --protocol's explainer;
each refusal is one line with exit code 2."""

from __future__ import annotations

import pytest

from unirep.cli import main
from unirep.errors import ConfigError
from unirep.explain import EXPLAINERS, explainer_name, get_explainer, resolve_examples


def test_detection_tasks_go_to_detections_and_others_to_the_protocol():
    assert explainer_name("detection", None) == "detections"
    assert explainer_name("detection", "knn") == "detections"
    assert explainer_name("classification", "knn") == "knn"
    assert explainer_name("classification", "prototype") == "prototype"
    with pytest.raises(ConfigError, match="needs --protocol"):
        explainer_name("classification", None)
    with pytest.raises(ConfigError, match="no case-based explanation"):
        explainer_name("classification", "linear")


def test_an_unregistered_explainer_is_one_line():
    assert "no-such-explainer" not in EXPLAINERS
    with pytest.raises(ConfigError, match="needs the explainer 'no-such-explainer'.*EXPLAINER_MODULES"):
        get_explainer("no-such-explainer", "some-task")


def test_examples_first_n_and_ids():
    ids = ["a", "b", "c", "d"]
    assert resolve_examples("first:2", ids, "test split") == [0, 1]
    assert resolve_examples("first:9", ids, "test split") == [0, 1, 2, 3]
    assert resolve_examples("d,a,d", ids, "test split") == [3, 0]
    for bad in ("first:0", "first:x", "", "a,zz"):
        with pytest.raises(ConfigError, match="--examples"):
            resolve_examples(bad, ids, "test split")


def test_cli_refusals_are_one_line_exit_2(capsys, tmp_path):
    assert main(["explain", "raw-pixels", "--task", "sklearn-digits", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs --protocol" in err
    assert main(["explain", "raw-pixels", "--task", "sklearn-digts", "--out", str(tmp_path), "--protocol", "knn"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean sklearn-digits" in err


def test_task_and_out_are_required_and_backbone_options_may_come_first(capsys, tmp_path):
    assert main(["explain", "raw-pixels", "--protocol", "knn"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs --task and --out" in err
    # a per-backbone option before --task: located by prefix parsing, which must not stop at the missing --task
    assert main(["explain", "raw-pixels", "--input-size", "16", "--task", "sklearn-digts", "--out", str(tmp_path),
                 "--protocol", "knn"]) == 2
    assert "did you mean sklearn-digits" in capsys.readouterr().err
