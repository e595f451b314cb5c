"""The report writer: which sections run (defaults skip what cannot apply, with a note; asked by name, refused in one
line naming what applies), the fallback differences, and a page that is self-contained with plotly.js inlined once."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from unirep.backbones import create_backbone
from unirep.errors import ConfigError, UnknownNameError
from unirep.inspect import list_sections
from unirep.inspect.context import InspectContext
from unirep.inspect.report import numbers_that_differ, resolve_sections, run_sections, write_report
from unirep.inspect.sections import SECTIONS, SectionResult


def test_defaults_skip_spatial_sections_on_a_backbone_without_maps_and_explicit_ones_are_refused():
    flat, maps = SimpleNamespace(label="raw-pixels", spatial=False), SimpleNamespace(label="cnn", spatial=True)
    spatial = [n for n in list_sections() if SECTIONS.get(n).needs_spatial]
    assert "exemplars" in spatial
    names, skipped = resolve_sections(None, [flat])
    assert set(skipped) == set(spatial) and not set(names) & set(spatial)
    assert "raw-pixels" in skipped["exemplars"]
    assert resolve_sections(None, [maps]) == (list_sections(), {})
    with pytest.raises(ConfigError) as info:
        resolve_sections(["representation", "exemplars"], [maps, flat])
    message = str(info.value)
    assert "\n" not in message and "'exemplars' needs spatial activation maps" in message
    assert "sections that apply are" in message and "representation" in message.split("apply are")[1]
    with pytest.raises(UnknownNameError, match="did you mean representation"):
        resolve_sections(["representaton"], [maps])
    # Asked in any order, run in the report's order.
    assert resolve_sections(["representation", "exemplars"], [maps]) == (["exemplars", "representation"], {})


def test_fallback_differences_list_the_numbers_that_changed_largest_first():
    a = SectionResult("s", "S", {"settings": {"q": 1}, "x": 1.0, "y": {"z": [2.0, 3.0]}, "same": 5, "flag": True}, "")
    b = SectionResult("s", "S", {"settings": {"q": 2}, "x": 1.5, "y": {"z": [2.0, 6.0]}, "same": 5, "flag": False}, "")
    diff = numbers_that_differ("s", "S", a, b)
    assert diff.numbers["shared"] == 4 and diff.numbers["differing"] == 2  # settings and bools are not numbers
    assert [row["number"] for row in diff.numbers["largest"]] == ["y.z.1", "x"]  # +100 % before +50 %
    assert "+3" in diff.html and "+0.5" in diff.html


def test_a_pair_report_is_self_contained_with_plotly_inlined_once(tmp_path):
    torch.manual_seed(0)
    images, labels = torch.rand(12, 3, 32, 32), torch.arange(12) % 2
    contexts = [InspectContext.for_testing(create_backbone("random:resnet18", input_size=32, seed=seed), images,
                                           labels, layers=["stage2"], n_images=12, label=f"init-{seed}",
                                           classifier=torch.nn.Identity()) for seed in (0, 1)]
    run = run_sections(contexts, ["representation"], progress=False)
    paths = write_report(run, contexts, tmp_path, {"note": "test"})
    page = paths["html"].read_text()
    assert page.count("* plotly.js v") == 1  # the bundle's header: inlined once, in the head
    assert page.index("* plotly.js v") < page.index("<body>")
    assert page.count("Plotly.newPlot") == 3  # A's and B's plots and the CKA heatmap, one bundle for all
    # Outside plotly.js (whose source mentions its CDN), nothing points off the page.
    bundle_end = page.index("</script>", page.index("* plotly.js v"))
    rest = page[:page.index("* plotly.js v")] + page[bundle_end:]
    assert "http://" not in rest and "https://" not in rest
    data = json.loads(paths["json"].read_text())
    assert data["config"] == {"note": "test"} and data["seed"] == 0
    assert set(data["sections"]["representation"]["results"]) == {"init-0", "init-1"}
    assert 0 < data["sections"]["representation"]["differences"]["numbers"]["cka_features"] < 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inspect.json", "report.html"]  # no temporary left
