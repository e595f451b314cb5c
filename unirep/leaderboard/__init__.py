"""Leaderboard: result records -> long/wide/aggregate CSVs, a Markdown table and a static HTML page.

Example:
    >>> from unirep.leaderboard import build_leaderboard, write_leaderboard
    >>> board = build_leaderboard(["runs/eval"], reference="raw-pixels")
    >>> write_leaderboard(board, "leaderboard")
"""

from unirep.leaderboard.blocks import ALL_TASKS, Block, build_blocks, task_suites
from unirep.leaderboard.board import OUTPUT_FILES, Leaderboard, build_leaderboard, read_results, write_leaderboard
from unirep.leaderboard.tables import Cell, group_cells, long_table, wide_table

__all__ = ["ALL_TASKS", "OUTPUT_FILES", "Block", "Cell", "Leaderboard", "build_blocks", "build_leaderboard",
           "group_cells", "long_table", "read_results", "task_suites", "wide_table", "write_leaderboard"]
