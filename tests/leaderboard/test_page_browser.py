"""The leaderboard page in a real browser: headless Chromium (Debian's chromium + chromium-driver) opens it from
disk with no network, logs no console error, shows every row, sorts when a header is clicked, and shows the OoD
section's tables as built."""

from __future__ import annotations

from pathlib import Path

import pytest
from leaderboard_records import SUITES
from ood_leaderboard_records import OOD_BENCHMARK, write_ood_grid

from unirep.leaderboard import build_leaderboard, write_leaderboard
from unirep.leaderboard.ood_section import ood_display
from unirep.leaderboard.page import TABLE_ID, page_frame


def column_texts(driver, index: int) -> list[str]:
    return driver.execute_script(
        f"return Array.from(document.querySelectorAll('#{TABLE_ID} tbody tr')).map("
        "row => row.children[arguments[0]].textContent);", index)


def wait_until_settled(driver) -> None:
    """Wait for the table, both figures, and a layout that stopped moving: the search panes and plotly render
    after the table exists, and a click during that reflow would land on whatever moved under the pointer."""
    from selenium.webdriver.support.ui import WebDriverWait

    ready = (f"return document.readyState === 'complete' && document.querySelector('#{TABLE_ID}.dataTable') !== null"
             " && document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2")
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(ready))
    where = f"return document.querySelector('#{TABLE_ID} thead').getBoundingClientRect().top + window.scrollY"
    positions = [None]
    WebDriverWait(driver, 30, poll_frequency=0.3).until(
        lambda d: positions.append(d.execute_script(where)) or positions[-1] == positions[-2])


def click_header(driver, title: str, direction: str) -> int:
    """Click the header titled `title` and wait until the table says it sorts by it in `direction` (asc/desc);
    return the header's position among the visible columns."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    headers = driver.find_elements(By.CSS_SELECTOR, f"#{TABLE_ID} thead th")
    position = [h.text.strip() for h in headers].index(title)
    headers[position].click()
    WebDriverWait(driver, 10).until(lambda d: f"dt-ordering-{direction}" in headers[position].get_attribute("class"))
    return position


def number(text: str) -> float:
    return float(text.split(" [")[0]) if text.strip() else float("-inf")


def test_page_loads_sorts_and_shows_every_row(results_dir, tmp_path, browser):
    write_ood_grid(results_dir)
    board = build_leaderboard([results_dir], reference="raw-pixels", suites=SUITES, n_boot=100)
    out = tmp_path / "lb"
    write_leaderboard(board, out)
    frame, _ = page_frame(board)

    browser.get(Path(out / "index.html").resolve().as_uri())
    wait_until_settled(browser)

    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []

    # Every row is on the page (no paging, no down-sampling), in the built order.
    backbone_column = list(frame.columns).index("backbone")
    visible = [c for c in frame.columns if not c.endswith(" CI")]
    shown = column_texts(browser, visible.index("backbone"))
    assert shown == frame.iloc[:, backbone_column].tolist()
    assert len(shown) == len(frame) == 24
    info = browser.execute_script(f"return document.querySelector('#{TABLE_ID}_info').textContent")
    assert f"Showing 1 to {len(frame)} of {len(frame)} entries" in info

    # Clicking a header sorts by it: ascending first, descending on the second click.
    before = column_texts(browser, visible.index("mean"))
    position = click_header(browser, "mean", "asc")
    ascending = column_texts(browser, position)
    assert ascending != before
    assert [number(t) for t in ascending] == sorted(number(t) for t in before)
    assert sorted(ascending) == sorted(before)  # same rows, reordered
    click_header(browser, "mean", "desc")
    assert [number(t) for t in column_texts(browser, position)] == sorted((number(t) for t in before), reverse=True)

    # A task column sorts numerically too (empty cells of suites without the task sort first).
    position = click_header(browser, "textures", "asc")
    textures = [number(t) for t in column_texts(browser, position)]
    assert textures == sorted(textures) and textures[-1] == pytest.approx(frame["textures"].max(), abs=0.005)

    # The protocol pane filters the rows.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    pane_rows = browser.find_elements(By.CSS_SELECTOR, "div.dtsp-searchPane tbody tr")
    next(r for r in pane_rows if r.text.split("\n")[0].strip() == "linear").click()
    linear = int((frame["protocol"] == "linear").sum())
    WebDriverWait(browser, 10).until(lambda d: len(column_texts(d, 1)) == linear)
    assert set(column_texts(browser, visible.index("protocol"))) == {"linear"}
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []

    # The OoD section: its heading, and each benchmark's table with every (backbone, classifier, score) row and the
    # cells (near / far AUROC and FPR95 with CIs) exactly as built, rendered as the browser shows them.
    ood = build_leaderboard([results_dir], n_boot=100).ood
    expected = ood_display(ood, OOD_BENCHMARK)
    assert browser.execute_script("return document.querySelector('#ood-detection').textContent") == "OoD detection"
    rendered = browser.execute_script(
        f"return Array.from(document.querySelectorAll('table.ood[data-benchmark=\"{OOD_BENCHMARK}\"] tr')).map("
        "row => Array.from(row.children).map(cell => cell.innerText));")
    assert rendered[0] == list(expected.columns)
    assert rendered[1:] == expected.values.tolist() and len(rendered) == 1 + 4
