"""Probes on frozen features (scikit-learn estimator contract): linear (L-BFGS logistic regression) and kNN."""

from __future__ import annotations

from unirep.probes.base import FeatureSplit, Probe, SealedSplit, TestOutcome
from unirep.registry import Registry

PROBES: Registry[type[Probe]] = Registry("probe")
register_probe = PROBES.register


def create_probe(name: str, **kwargs) -> Probe:
    """Build the registered probe `name`; unset (None) keyword arguments keep the probe's defaults.

    Example:
        >>> probe = create_probe("linear", max_iter=200)
    """
    _import_probes()
    return PROBES.get(name)(**{k: v for k, v in kwargs.items() if v is not None})


def _import_probes() -> None:
    from unirep.probes import knn, linear, multilabel  # noqa: F401  (register on import)


__all__ = ["PROBES", "FeatureSplit", "Probe", "SealedSplit", "TestOutcome", "create_probe", "register_probe"]
