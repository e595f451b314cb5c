"""`unirep explain --protocol knn|prototype` end to end on a tiny random CNN (real timm model, real task, the
feature cache): the kNN page's decisions and vote weights equal an independent numpy computation of DINO's vote on
the same cached features; the prototype page's evidence is the probe's own (contributions ranked, sources of the
prototype's class, decision = argmax of the logits) with the masking check; both pages load in headless Chromium
with every case and image; and the refusals are one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unirep.cli import main

TINY = ["max_input_size=32", "prototype.min_rows=4", "prototype.epochs=1", "prototype.lrs=[0.01]",
        "prototype.cost_weights=[[0.8,0.08]]", "prototype.last_layer_steps=5", "prototype.prototype_dim=8"]
BACKBONE = "random:mobilenetv2_035"


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    cache = f"cache_dir={root / 'cache'}"
    out = {}
    for name, extra in (("knn", ["--protocol", "knn", "--neighbours", "5", "--examples", "0005"]),
                        ("prototype", ["--protocol", "prototype", "--faithfulness", "12", "--examples", "first:2"]),
                        ("band", ["--protocol", "prototype", "--prototype-band", "--faithfulness", "0",
                                  "--examples", "first:2"])):
        out[name] = root / name
        assert main(["explain", BACKBONE, "--task", "sklearn-digits", "--out", str(out[name]), cache, *TINY,
                     *extra]) == 0
    out["cache"] = root / "cache"
    return out


def read(folder):
    return json.loads((folder / "explain.json").read_text())


def test_knn_decisions_and_weights_match_an_independent_vote(pages):
    from unirep.backbones import create_backbone
    from unirep.features import ExtractionSettings, FeatureCache
    from unirep.tasks import create_task

    record = read(pages["knn"])
    assert record["examples"] == ["0005"] and record["manifest_digest"] and record["versions"]["torch"]
    k, temperature = record["probe"]["k"], record["probe"]["T"]
    task = create_task("sklearn-digits")
    backbone = create_backbone(BACKBONE, input_size=32)
    cache = FeatureCache(pages["cache"])
    feats = {s: cache.get_or_extract(backbone, task.manifest, s, task.split(s), ExtractionSettings())
             for s in ("train", "val", "test")}
    assert all(f.cached for f in feats.values())  # the page read the same cache
    fit = np.concatenate([feats["train"].features, feats["val"].features]).astype(np.float64)
    fit_labels = np.concatenate([feats["train"].labels, feats["val"].labels])
    fit /= np.linalg.norm(fit, axis=1, keepdims=True)
    query = feats["test"].features[task.split("test").ids.index("0005")].astype(np.float64)
    sims = fit @ (query / np.linalg.norm(query))
    nearest = np.argsort(-sims, kind="stable")[:k]
    weights = np.exp(sims[nearest] / temperature)
    votes = np.bincount(fit_labels[nearest], weights=weights, minlength=10)
    (case,) = record["cases"]
    assert case["decision"] == str(int(votes.argmax()))
    np.testing.assert_allclose([n["weight"] for n in case["neighbours"]], weights, rtol=1e-4)
    np.testing.assert_allclose([n["similarity"] for n in case["neighbours"]], sims[nearest], rtol=1e-5, atol=1e-6)
    assert sum(n["share"] for n in case["neighbours"]) == pytest.approx(1.0)
    by_class = {v["class"]: v["votes"] for v in case["votes"]}
    np.testing.assert_allclose([by_class.get(str(c), 0.0) for c in range(10)], votes, rtol=1e-4)


def test_prototype_page_records_the_probes_own_evidence(pages):
    from unirep.tasks import create_task

    task = create_task("sklearn-digits")
    labels = {s: dict(zip(task.split(s).ids, task.split(s).labels.tolist())) for s in ("train", "val")}
    for name in ("prototype", "band"):
        record = read(pages[name])
        assert record["examples"] == ["0000", "0001"] and record["probe"]["layer"] == "stage2"
        assert record["probe"]["band"] == (1 if name == "band" else None)
        for case in record["cases"]:
            assert case["decision"] == max(case["logits"], key=lambda e: e["logit"])["class"]
            contributions = [e["contribution"] for e in case["evidence"]]
            assert contributions == sorted(contributions, reverse=True) and len(contributions) == 3
            for entry in case["evidence"]:
                assert str(labels[entry["source_split"]][entry["source_id"]]) == entry["class"]
                assert entry["contribution"] == pytest.approx(entry["weight"] * entry["similarity"], rel=1e-4)
                x1, y1, x2, y2 = entry["source_box"]
                assert 0 <= x1 < x2 <= 32 and 0 <= y1 < y2 <= 32
    check = read(pages["prototype"])["faithfulness"]
    assert check["summary"]["n"] == 12 and len(check["images"]) == 12
    assert 0 <= check["summary"]["logit"]["share_evidence_larger"] <= 1
    assert read(pages["band"])["faithfulness"] is None


def page_state(driver, folder):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get((folder / "explain.html").resolve().as_uri())
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"))
    return driver.execute_script("""
        return {
          cases: Array.from(document.querySelectorAll('section.case')).map(s => s.dataset.id),
          decisions: Array.from(document.querySelectorAll('section.case .decision')).map(p => p.dataset.decision),
          images: document.images.length,
          broken: Array.from(document.images).filter(i => !(i.naturalWidth > 0 && i.naturalHeight > 0)).length,
          external: Array.from(document.querySelectorAll('[src],[href]')).map(e => e.getAttribute('src') ||
                    e.getAttribute('href')).filter(u => /^(https?:)?\\/\\//.test(u)),
          neighbourRows: Array.from(document.querySelectorAll('table.neighbours tbody tr')).length,
          faithfulness: document.querySelectorAll('section.faithfulness table tbody tr').length,
          record: document.getElementById('record').textContent.includes('manifest_digest'),
        };""")


def test_pages_load_in_chromium_with_every_case_and_image(pages, browser):
    knn = page_state(browser, pages["knn"])
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    assert knn["cases"] == ["0005"] and knn["decisions"] == [read(pages["knn"])["cases"][0]["decision"]]
    assert knn["images"] == 1 + 5 and knn["broken"] == 0 and knn["external"] == [] and knn["neighbourRows"] == 5
    assert knn["record"]
    proto = page_state(browser, pages["prototype"])
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    assert proto["cases"] == ["0000", "0001"]
    assert proto["decisions"] == [c["decision"] for c in read(pages["prototype"])["cases"]]
    assert proto["images"] == 2 * 3 * 3 and proto["broken"] == 0 and proto["external"] == []
    assert proto["faithfulness"] == 2 and proto["record"]


def test_refusals_are_one_line(tmp_path, capsys):
    cases = [(["raw-pixels", "--protocol", "prototype"], "needs spatial feature maps"),
             (["raw-pixels", "--protocol", "knn", "--examples", "nope"], "--examples: nope not in"),
             ([BACKBONE, "raw-pixels", "--protocol", "knn"], "takes one backbone, got 2"),
             ([BACKBONE, "--protocol", "prototype", "prototype.bogus=1"], "prototype settings ['bogus'] do not exist")]
    for extra, message in cases:
        code = main(["explain", "--task", "sklearn-digits", "--out", str(tmp_path / "o"), "max_input_size=32",
                     f"cache_dir={tmp_path / 'cache'}", *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], (extra, err)
