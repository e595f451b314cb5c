"""The inspection report in a real browser: headless Chromium (Debian's chromium + chromium-driver) opens it from
disk with no network, logs no console error, and shows every section of inspect.json with every image decoded and
every plotly figure drawn; the A-vs-B page pairs each section (two sides) under its highlighted differences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unirep.backbones import create_backbone
from unirep.inspect.context import InspectContext
from unirep.inspect.report import REPORT_HTML, REPORT_JSON, resolve_sections, run_sections, write_report

SECTIONS = ["exemplars", "representation"]  # in report order; the CLI default runs every registered section


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """A one-backbone and an A-vs-B report of two random ResNet-18 inits on 24 noise images (no probe needed:
    these sections read features and layer maps)."""
    torch.manual_seed(0)
    images, labels = torch.rand(24, 3, 32, 32), torch.arange(24) % 3
    contexts = [InspectContext.for_testing(create_backbone("random:resnet18", input_size=32, seed=seed), images,
                                           labels, layers=["stage1", "stage2"], n_images=24, label=f"init-{seed}",
                                           classifier=torch.nn.Identity(),
                                           settings={"exemplars": {"units": 2, "top_k": 3}})
                for seed in (0, 1)]
    out = {}
    for name, chosen in (("one", contexts[:1]), ("pair", contexts)):
        names, _ = resolve_sections(SECTIONS, chosen)
        run = run_sections(chosen, names, progress=False)
        assert not run.failed
        out[name] = tmp_path_factory.mktemp(f"report-{name}")
        write_report(run, chosen, out[name], {"test": name})
    return out


def open_report(driver, folder: Path) -> dict:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get((folder / REPORT_HTML).resolve().as_uri())
    data = json.loads((folder / REPORT_JSON).read_text())
    ready = ("return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"
             " && document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(ready))
    return data


def page_state(driver) -> dict:
    return driver.execute_script("""
        const sections = Array.from(document.querySelectorAll('section.inspect-section'));
        return {
          sections: sections.map(s => s.dataset.section),
          images: document.images.length,
          broken: Array.from(document.images).filter(i => !(i.naturalWidth > 0 && i.naturalHeight > 0)).length,
          external: Array.from(document.querySelectorAll('[src],[href]')).map(e => e.getAttribute('src') ||
                    e.getAttribute('href')).filter(u => /^(https?:)?\\/\\//.test(u)),
          plots: document.querySelectorAll('.js-plotly-plot .main-svg').length,
          sides: sections.map(s => s.querySelectorAll(':scope > .pair > .side').length),
          differences: sections.map(s => s.querySelectorAll(':scope > .differences').length),
          highlight: (() => { const d = document.querySelector('.differences');
                              return d ? getComputedStyle(d).backgroundColor : null; })(),
        };""")


def test_one_backbone_report_loads_with_every_section_and_image(reports, browser):
    data = open_report(browser, reports["one"])
    state = page_state(browser)
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    assert state["sections"] == SECTIONS and set(data["sections"]) == set(SECTIONS)  # page in report order
    exemplar_units = sum(len(layer["units"]) for layer in
                         data["sections"]["exemplars"]["results"]["init-0"]["numbers"]["layers"].values())
    assert exemplar_units == 4 and state["images"] == exemplar_units * (3 + 1)  # exemplars + one crop strip each
    assert state["broken"] == 0 and state["external"] == [] and state["plots"] >= 1
    assert state["sides"] == [0, 0] and state["differences"] == [0, 0]


def test_pair_report_pairs_every_section_under_highlighted_differences(reports, browser):
    data = open_report(browser, reports["pair"])
    state = page_state(browser)
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    assert state["sections"] == SECTIONS and set(data["sections"]) == set(SECTIONS)  # page in report order
    assert state["sides"] == [2, 2] and state["differences"] == [1, 1]
    assert state["highlight"] not in (None, "rgba(0, 0, 0, 0)", "rgb(255, 255, 255)")
    assert state["broken"] == 0 and state["external"] == [] and state["images"] > 0
    # The CKA heatmap and both backbones' plots are drawn.
    assert state["plots"] >= 3
    assert "cka_layers" in data["sections"]["representation"]["differences"]["numbers"]
