"""Training-free transferability estimators: pure functions of cached features (and, for LEEP/NCE, of the
backbone's source logits) that predict how well a backbone will transfer to a task, at a fraction of a probe's
cost. Always judge them by their rank agreement with real probe results (`unirep.estimators.agreement`):
no estimator wins everywhere (Agostinelli et al., ECCV 2022).

| name             | reads                   | reference                          | scale invariant   |
|------------------|-------------------------|------------------------------------|-------------------|
| logme            | features                | You et al., ICML 2021 (exact evidence by default) | yes (exact variant) |
| hscore           | features                | Bao et al., ICIP 2019              | yes               |
| hscore-shrinkage | features                | Ibrahim et al., ICLR 2023          | yes               |
| nleep            | features (PCA + GMM)    | Li et al., CVPR 2021               | yes (up to fit noise) |
| leep             | source logits           | Nguyen et al., ICML 2020           | n/a (no features) |
| nce              | source logits           | Tran et al., ICCV 2019             | n/a (no features) |
| rankme           | features (no labels)    | Garrido et al., ICML 2023          | yes               |
| alpha-req        | features (no labels)    | Agrawal et al., NeurIPS 2022 (score -abs(alpha - 1)) | yes |
| nc1              | features                | Papyan et al., PNAS 2020 (score -log10 NC1) | yes      |

Every score is "higher is better" and every estimator is invariant to relabelling the classes.

Example:
    >>> from unirep.estimators import create_estimator
    >>> create_estimator("logme").score(features, labels)
"""

from __future__ import annotations

import importlib

import numpy as np

from unirep.estimators.base import Estimator
from unirep.registry import Registry

ESTIMATORS: Registry[type[Estimator]] = Registry("estimator")
register_estimator = ESTIMATORS.register

# Modules holding estimators; each registers its classes on import.
ESTIMATOR_MODULES = (
    "unirep.estimators.logme",
    "unirep.estimators.hscore",
    "unirep.estimators.source_head",
    "unirep.estimators.nleep",
    "unirep.estimators.geometry",
)


def _import_estimators() -> None:
    for module in ESTIMATOR_MODULES:
        importlib.import_module(module)


def create_estimator(name: str, **kwargs) -> Estimator:
    """Build the registered estimator `name`; unset (None) keyword arguments keep its defaults.

    Example:
        >>> logme = create_estimator("logme", variant="reference")
        >>> logme.needs_source_head, logme.score(features, labels)
    """
    _import_estimators()
    return ESTIMATORS.get(name)(**{k: v for k, v in kwargs.items() if v is not None})


def list_estimators(pattern: str = "*", *, source_head_available: bool = True) -> list[str]:
    """Registered estimator names matching `pattern`; with `source_head_available=False`, only those that
    need no source classifier (what can score a backbone without one)."""
    _import_estimators()
    names = ESTIMATORS.list(pattern)
    if source_head_available:
        return names
    return [n for n in names if not ESTIMATORS.get(n).needs_source_head]


def score_estimators(
    features: np.ndarray,
    labels: np.ndarray,
    source_logits: np.ndarray | None = None,
    *,
    names: list[str] | None = None,
    backbone: str | None = None,
) -> dict[str, float]:
    """Score several estimators (default: every one applicable, i.e. LEEP/NCE only when logits are given).

    Example:
        >>> score_estimators(features, labels)  # {'hscore': ..., 'hscore-shrinkage': ..., 'logme': ..., 'nleep': ...}
    """
    if names is None:
        names = list_estimators(source_head_available=source_logits is not None)
    return {name: create_estimator(name).score(features, labels, source_logits, backbone=backbone) for name in names}


__all__ = ["ESTIMATORS", "Estimator", "create_estimator", "list_estimators", "register_estimator", "score_estimators"]
