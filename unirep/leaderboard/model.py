"""What every leaderboard output is rendered from: the `Leaderboard` and the aggregates the tables show.

`board` builds it from records; `markdown` and `page` render it. Both renderers import this module and never
each other or `board`, so Markdown stays free of the HTML page's plotting stack (plotly, itables).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from unirep.leaderboard.agreement import AGREEMENT_COLUMNS
from unirep.leaderboard.blocks import ALL_TASKS, Block, protocol_order
from unirep.leaderboard.ood_section import empty_ood_table
from unirep.leaderboard.seeds import SEED_COLUMNS
from unirep.leaderboard.tables import Cell

# PROTOCOLS.md: report the plain mean, mean rank, mNRG, Borda and z-score side by side, with CIs.
# {aggregate: column title}, in this order, in the Markdown tables and on the page.
SHOWN_AGGREGATES = {"mean": "mean", "mean_rank": "mean rank", "mnrg": "mNRG", "borda": "Borda", "zscore": "z-score"}


@dataclass
class Leaderboard:
    """Everything the outputs are rendered from.

    Attributes:
        cells: one per (backbone, task, protocol); `long`/`wide`/`aggregates` are their tables.
        blocks: universality per (suite, protocol), suite "all" first.
        skipped: (path, reason) of each malformed record, left out.
        notes: choices and problems worth reading (superseded duplicates, split mismatches, missing CIs).
        axis, axis_values: the quantity universality is plotted against, per backbone (when recorded).
        configs: run config per config digest, for the provenance of each row.
        agreement: Kendall / weighted tau of each estimator vs the linear probe (and fine-tuning), per task with
            enough backbones and the mean over tasks (`unirep.leaderboard.agreement`); empty without estimators.
        seeds: backbones labelled `<name>@seed<k>` grouped over their training seeds, mean ± t-interval per task
            and aggregate (`unirep.leaderboard.seeds`); empty when there are none. seed_notes: what it left out.
        single_seed: backbones unirep trained that have one training seed (their rows get a note saying so).
        ood: the OoD detection rows (`unirep.leaderboard.ood_section`), from the runs' ood-records/; empty without.
    """

    cells: list[Cell]
    long: pd.DataFrame
    wide: pd.DataFrame
    blocks: list[Block]
    aggregates: pd.DataFrame
    skipped: list[tuple[str, str]]
    notes: list[str]
    reference: str | None
    axis: str
    axis_values: dict[str, float]
    n_boot: int
    level: float
    n_records: int
    configs: dict[str, dict] = field(default_factory=dict)
    agreement: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=AGREEMENT_COLUMNS))
    seeds: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SEED_COLUMNS))
    seed_notes: list[str] = field(default_factory=list)
    single_seed: list[str] = field(default_factory=list)
    ood: pd.DataFrame = field(default_factory=empty_ood_table)

    @property
    def protocols(self) -> list[str]:
        return protocol_order(self.cells)

    @property
    def tasks(self) -> list[str]:
        return sorted({c.task for c in self.cells})

    @property
    def backbones(self) -> list[str]:
        return sorted({c.backbone for c in self.cells})


def headline_block(board: Leaderboard, protocol: str) -> Block | None:
    return next((b for b in board.blocks if b.suite == ALL_TASKS and b.protocol == protocol), None)
