"""scripts/fingerprint.py, the cross-machine check: a run's fingerprint against itself is identical everywhere, and
a moved score, a changed selection and changed features are each reported with their size."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unirep.cli import main
from unirep.features import ExtractionSettings, FeatureCache
from unirep.results import load_records
from unirep.tasks import create_task

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fingerprint.py"


def fingerprint(*args: str) -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("fingerprint")
    out, cache = root / "out", root / "cache"
    assert main(["eval", "raw-pixels", "--tasks", "lfw-faces", "--protocols", "linear,logme", "--out", str(out),
                 "--cache-dir", str(cache), "linear.n_c=8"]) == 0
    fingerprint("write", str(out), "--cache-dir", str(cache), "--out", str(root / "a.json"))
    return root, json.loads((root / "a.json").read_text()), out, cache


def test_fingerprint_holds_the_cached_features_and_the_records(written):
    root, a, out, cache = written
    records = {(r.protocol, r.score) for r in load_records(out)[0]}
    assert {(key.split(" | ")[2], cell["score"]) for key, cell in a["records"].items()} == records
    task = create_task("lfw-faces")
    from unirep.backbones import create_backbone

    backbone = create_backbone("raw-pixels")
    for split, n in (("train", 100), ("val", 40), ("test", 60)):
        features = FeatureCache(cache).get_or_extract(backbone, task.manifest, split, task.split(split),
                                                      ExtractionSettings()).features
        entry = a["features"][f"raw-pixels | lfw-faces | {split}"]
        assert entry["shape"] == [n, features.shape[1]]
        assert entry["sha256"] == hashlib.sha256(features.tobytes()).hexdigest()
        projection = np.random.default_rng(0).standard_normal((features.shape[1], 8))
        np.testing.assert_allclose(entry["projected"], features[:32].astype(np.float64) @ projection, rtol=1e-9)
    assert a["machine"]["cpu"] and a["machine"]["torch"]


def test_compare_reports_identical_and_moved_cells(written):
    root, a, _, _ = written
    assert "3 of 3 entries bit-identical" in fingerprint("compare", str(root / "a.json"), str(root / "a.json"))
    b = json.loads(json.dumps(a))
    linear = next(k for k in b["records"] if "| linear |" in k)
    b["records"][linear]["score"] += 0.5
    b["records"][linear]["selected"] = {"C": 123.0}
    test_entry = b["features"]["raw-pixels | lfw-faces | test"]
    test_entry["sha256"] = "0" * 64
    test_entry["projected"] = (np.asarray(test_entry["projected"]) * (1 + 2e-6)).tolist()
    (root / "b.json").write_text(json.dumps(b))
    report = fingerprint("compare", str(root / "a.json"), str(root / "b.json"))
    assert "2 of 3 entries bit-identical" in report
    assert "raw-pixels | lfw-faces | test: max relative difference of the projected rows 2.0e-06" in report
    assert ("records: 1 of 2 test scores identical, 1 selections differ (1 in a chosen value, 0 in the certificate "
            "only, 0 in last bits only)") in report
    assert "(+0.5)" in report and "selected (in a chosen value)" in report and "-> {'C': 123.0}" in report


@pytest.mark.parametrize("change, kind", [
    ({"C": "next float"}, "0 in a chosen value, 0 in the certificate only, 1 in last bits only"),
    ({"uncertain_val": 3}, "0 in a chosen value, 1 in the certificate only, 0 in last bits only"),
    ({"C": "next float", "uncertain_val": 3}, "0 in a chosen value, 1 in the certificate only, 0 in last bits only"),
    ({"C": "1e-9 apart"}, "1 in a chosen value, 0 in the certificate only, 0 in last bits only"),
])
def test_compare_tells_a_changed_choice_from_bookkeeping(written, change, kind):
    """The same C one bit apart (another CPU's pow in the grid) or another count of uncertain val predictions is not
    another choice; a C 1e-9 apart is (no grid holds two such values, so it is another setting)."""
    root, a, _, _ = written
    b = json.loads(json.dumps(a))
    linear = next(k for k in b["records"] if "| linear |" in k)
    selected = b["records"][linear]["selected"]
    assert {"C", "uncertain_val"} <= set(selected)
    for key, value in change.items():
        if value == "next float":
            value = float(np.nextafter(selected["C"], np.inf))
        elif value == "1e-9 apart":
            value = selected["C"] * (1 + 1e-9)
        selected[key] = value
    (root / "changed.json").write_text(json.dumps(b))
    report = fingerprint("compare", str(root / "a.json"), str(root / "changed.json"))
    assert f"records: 2 of 2 test scores identical, 1 selections differ ({kind})" in report
