"""`unirep explain DETECTOR --task composed-scenes ...` end to end: a random-init RetinaNet saved as a detector folder,
the real composed-scenes test split, all four methods; the json records the settings, seeds, versions and the
manifest digest; the page opens in headless Chromium with every map decoded and no console error; bad input is one
line with exit code 2. ~20 s on 2 shared cores (the scenes come from the task's on-disk cache after the first run).
"""

from __future__ import annotations

import json

import pytest
import torch

from unirep.cli import main

CLASSES = ("trouser", "bag", "sneaker", "digit_four", "elephant")


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory):
    from unirep.detection.detectors.retinanet import RetinaNetDetector

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-retinanet")
    RetinaNetDetector.build(CLASSES, {"arch": "mobilenetv2_050", "pretrained_backbone": None}).save(folder)
    return folder


@pytest.fixture(scope="module")
def explained(detector_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("explain")
    code = main(["explain", str(detector_dir), "--task", "composed-scenes", "--examples", "first:1", "--methods",
                 "drise,occlusion,gradcam,eigencam", "--masks", "16", "--conf", "0.01", "--max-detections", "2",
                 "--seed", "5", "--out", str(out)])
    assert code == 0
    return out, json.loads((out / "explain.json").read_text())


def test_the_record_holds_settings_seeds_versions_and_the_manifest(explained):
    from unirep.tasks import create_task

    _, record = explained
    assert record["manifest_digest"] == create_task("composed-scenes").manifest.digest
    assert record["detections"] == {"conf": 0.01, "iou": 0.5, "max_detections": 2}
    drise = record["settings"]["drise"]
    assert (drise["masks"], drise["seed"], drise["resolution"], drise["p"], drise["baseline"]) == (16, 5, 16, 0.5,
                                                                                                   "mean")
    assert record["seed"] == 5 and {"torch", "captum", "grad-cam"} <= set(record["versions"])
    (image,) = record["images"]
    assert image["id"] == "test/00000" and len(image["detections"]) == 2
    assert set(image["timings"]) == {"drise", "occlusion", "gradcam", "eigencam"}
    assert set(image["detections"][0]["metrics"]) == {"drise · full", "drise · category", "drise · location",
                                                      "occlusion · category", "occlusion · location",
                                                      "gradcam · category", "gradcam · location", "eigencam · full"}


def test_the_page_shows_every_map_in_chromium(explained, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    out, record = explained
    browser.get((out / "explain.html").resolve().as_uri())
    WebDriverWait(browser, 60).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"))
    state = browser.execute_script("""
        return {
          images: document.images.length,
          broken: Array.from(document.images).filter(i => !(i.naturalWidth > 0 && i.naturalHeight > 0)).length,
          external: Array.from(document.querySelectorAll('[src],[href]')).map(e => e.getAttribute('src') ||
                    e.getAttribute('href')).filter(u => /^(https?:)?\\/\\//.test(u)),
          detections: document.querySelectorAll('.detection').length,
          maps: Array.from(document.querySelectorAll('.detection figure')).map(f => f.dataset.method + ' · ' +
                f.dataset.variant),
          record: document.getElementById('record').textContent,
          width: document.querySelector('.detection img').naturalWidth,
        };""")
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    assert state["detections"] == 2 and state["images"] == 1 + 2 * 8 and state["broken"] == 0
    assert state["external"] == [] and state["width"] == 256  # 128-px scenes drawn at 2x
    assert sorted(state["maps"][:8]) == sorted(record["images"][0]["detections"][0]["metrics"])
    shown = json.loads(state["record"])
    assert shown["settings"] == record["settings"] and shown["manifest_digest"] == record["manifest_digest"]


@pytest.mark.parametrize("extra, message", [
    (["--methods", "drise,nope"], "--methods: unknown nope"),
    (["--masks", "0"], "--masks 0"),
    (["--iou", "1.5"], "--iou 1.5"),
])
def test_bad_options_are_one_line_exit_2(detector_dir, tmp_path, capsys, extra, message):
    code = main(["explain", str(detector_dir), "--task", "composed-scenes", "--out", str(tmp_path), *extra])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "explain.html").exists()


def test_a_folder_that_is_no_detector_and_a_detector_for_other_classes_are_refused(tmp_path, capsys):
    from unirep.detection.detectors.retinanet import RetinaNetDetector

    code = main(["explain", str(tmp_path), "--task", "composed-scenes", "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "not a detector folder" in lines[0]
    other = RetinaNetDetector.build(("a", "b"), {"arch": "mobilenetv2_050", "pretrained_backbone": None})
    other.save(tmp_path / "two-classes")
    code = main(["explain", str(tmp_path / "two-classes"), "--task", "composed-scenes", "--out", str(tmp_path)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "2 classes but the task has 5" in lines[0]
