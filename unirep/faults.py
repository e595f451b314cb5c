"""Deterministic fault points for the fault tests (tests/test_fault_catalogue.py); inert unless UNIREP_FAULT is set.

A test that kills a run "during extraction" must kill it at a known point, not after a sleep that a busy 2-core
machine stretches. The pipeline calls `fault_point(name)` at a few places; `UNIREP_FAULT=<name>:<n>:<action>` makes
the n-th call of that point act:

    kill           SIGKILL this process (nothing is flushed or cleaned up, as with the OOM killer or a power cut)
    wait=<file>    create <file>.reached, then wait until <file> exists (lets a test hold a run at that point)

Points: `extract-batch` (after each extracted batch), `probe` (before a protocol runs on a job), `records-lock`
(before `unirep eval` takes the lock of a (backbone, task)'s records).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

ENV_FAULT = "UNIREP_FAULT"
POINTS = ("extract-batch", "probe", "records-lock")
_calls: Counter[str] = Counter()


def fault_point(name: str) -> None:
    spec = os.environ.get(ENV_FAULT)
    if not spec:
        return
    point, count, action = spec.split(":", 2)
    if point != name:
        return
    _calls[name] += 1
    if _calls[name] != int(count):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("wait="):
        release = Path(action.removeprefix("wait="))
        Path(f"{release}.reached").touch()
        while not release.exists():
            time.sleep(0.05)
    else:
        raise ValueError(f"{ENV_FAULT}={spec!r}: the action must be kill or wait=<file>")
