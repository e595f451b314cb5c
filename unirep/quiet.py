"""Silencing Lightning's per-Trainer chatter, which unirep would otherwise print once per network or candidate."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Within: no "GPU available ..." banners or tips (rank-zero info), and none of the warnings below; Lightning's
    real warnings and errors still show. Why: the main job fits several Trainers in a row (source networks,
    fine-tuning candidates), and the same lines repeated for each one buried the progress that matters."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # Data is cached in memory and 2 cores are the target: few workers is the intended setting.
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
            # Frozen stages are in eval mode on purpose (batch-norm statistics stay as pretrained).
            warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
            warnings.filterwarnings("ignore", message=".*treespec.*")  # Lightning's own use of a torch API
            yield
    finally:
        logger.setLevel(level)
