from __future__ import annotations

from pathlib import Path

import pytest
from leaderboard_records import write_grid


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    write_grid(out)
    return out
