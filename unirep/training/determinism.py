"""Lightning's `Trainer(deterministic=...)` sets process-wide switches and never sets them back: torch's
deterministic-algorithms mode (and its warn-only flag), cuDNN's benchmark flag and, when deterministic, the
`CUBLAS_WORKSPACE_CONFIG` environment variable. Every fit of unirep runs inside `preserve_deterministic_mode`, so
the caller (and the next Trainer) finds them as they were before."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from unirep.runtime_env import preserved_environ

CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"


@contextlib.contextmanager
def preserve_deterministic_mode() -> Iterator[None]:
    """Within: anything may switch deterministic algorithms (or cuDNN benchmarking) on or off; on exit, also by an
    exception, every switch is what it was on entry.

    Example:
        >>> with preserve_deterministic_mode():
        ...     pl.Trainer(deterministic=True).fit(module)
        >>> torch.are_deterministic_algorithms_enabled()  # as before the fit
        False
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    try:
        with preserved_environ(CUBLAS_WORKSPACE):
            yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
