"""Post-hoc OoD scores: one registry, one decorator, each score "higher = more in-distribution".

A score is a decorated function of the logits (nothing to fit), or a decorated class in OpenOOD's postprocessor
shape: `setup(train)` fits statistics on the ID training features (and the classifier head), `score(features,
logits)` returns one number per example. A class's `grid` maps each hyperparameter to candidates; `select_and_setup`
chooses among them by AUROC of ID val vs the benchmark's validation OoD set, never a test OoD set.

Adding a score is one decorated function or class:

    >>> @register_score("max-logit-squared", paper="an example")
    ... def max_logit_squared(logits):
    ...     return np.max(logits, axis=1) ** 2

The classifier is a linear head in the raw feature space (`LinearHead`): unirep's linear probe standardises
features, and `LinearHead.from_probe` folds that standardisation into the weights, so feature-shaping scores
(ReAct, ASH) and ViM's origin act on the backbone's own features, as in their papers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy.special import logsumexp, softmax

from unirep.errors import ConfigError, DataError
from unirep.registry import Registry


@dataclass(frozen=True)
class LinearHead:
    """logits = features @ weight.T + bias, in float64, on the backbone's raw features."""

    weight: np.ndarray  # (K, D)
    bias: np.ndarray  # (K,)

    @classmethod
    def from_probe(cls, probe: Any, scale: np.ndarray | None = None) -> LinearHead:
        """The fitted `unirep.probes.linear.LinearProbe` as a head on raw features: W' = W / scale and
        b' = b - W' mean, the same logits as `probe.decision_scores` (up to float rounding). `scale` replaces the
        probe's own (fine-tuning's floored fold: unirep.finetune.probe_head)."""
        scale = probe.scale_ if scale is None else scale
        weight = np.asarray(probe.coef_, np.float64) / np.asarray(scale, np.float64)
        bias = np.asarray(probe.intercept_, np.float64) - weight @ np.asarray(probe.mean_, np.float64)
        return cls(weight, bias)

    def logits(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, np.float64) @ self.weight.T + self.bias


@dataclass(frozen=True)
class FitData:
    """What a score may fit on: the ID training features, their labels (0..K-1) and the classifier head.
    `memo` keeps work the candidates of one score share (e.g. ViM's eigendecomposition), keyed by the score."""

    features: np.ndarray
    labels: np.ndarray
    head: LinearHead | None
    memo: dict = field(default_factory=dict, compare=False, repr=False)


class ScoreNotApplicable(DataError):
    """A score that is undefined on these features (e.g. ASH on features with negative values): the run skips it
    for this backbone with one line, as `unirep eval` skips LEEP on backbones without a source head."""


class OodScore:
    """Base class of fitted scores. Subclasses set `grid` (hyperparameter -> candidates, chosen on val OoD) or
    `defaults` (fixed hyperparameters), implement `setup` and `score`. `needs_head`: the score reads logits or the
    head (False for feature-only scores such as Mahalanobis, kNN)."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    needs_head: ClassVar[bool] = True
    grid: ClassVar[dict[str, list]] = {}
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(self.grid) - set(self.defaults))
        if unknown:
            raise ConfigError(f"OoD score {self.name!r} has no hyperparameter(s) {unknown}; it has "
                              f"{sorted({*self.grid, *self.defaults})}")
        self.params = {**self.defaults, **{k: v[0] for k, v in self.grid.items()}, **params}

    def setup(self, train: FitData) -> OodScore:
        return self

    def score(self, features: np.ndarray, logits: np.ndarray | None) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def candidates(cls, train: FitData) -> list[dict[str, Any]]:
        """Every hyperparameter setting to try, in tie-break order (the first of equal val AUROCs wins)."""
        settings: list[dict[str, Any]] = [{}]
        for key, values in cls.grid.items():
            settings = [{**s, key: v} for s in settings for v in cls.valid_values(key, values, train)]
        return settings

    @classmethod
    def valid_values(cls, key: str, values: list, train: FitData) -> list:
        return list(values)


SCORES: Registry[type[OodScore]] = Registry("OoD score")


def register_score(name: str, *, paper: str = "", **defaults: Any) -> Callable:
    """Register a score class, or a function of `logits` (and keyword hyperparameters given here as defaults)."""

    def decorator(obj):
        cls = obj if isinstance(obj, type) else _logit_score_class(obj, paper, defaults)
        cls.name = name
        if paper:
            cls.paper = paper
        SCORES.add(name, cls)
        return obj

    return decorator


def _logit_score_class(function: Callable, paper: str, defaults: dict[str, Any]) -> type[OodScore]:
    parameters = list(inspect.signature(function).parameters)
    if not parameters or parameters[0] != "logits":
        raise TypeError(f"a score function takes `logits` first, got {function.__name__}({', '.join(parameters)})")

    class FunctionScore(OodScore):
        def score(self, features, logits):
            return function(np.asarray(logits, np.float64), **self.params)

    FunctionScore.defaults = dict(defaults)
    FunctionScore.__doc__ = function.__doc__
    FunctionScore.__qualname__ = FunctionScore.__name__ = f"{function.__name__}_score"
    return FunctionScore


# ---------------------------------------------------------------------------------------------- logit scores
@register_score("msp", paper="Hendrycks & Gimpel, ICLR 2017: maximum softmax probability")
def maximum_softmax_probability(logits):
    return softmax(logits, axis=1).max(axis=1)


@register_score("max-logit", paper="Hendrycks et al., ICML 2022 (Scaling OoD detection): maximum logit")
def max_logit(logits):
    return logits.max(axis=1)


@register_score("energy", paper="Liu et al., NeurIPS 2020: T * logsumexp(logits / T), T = 1", temperature=1.0)
def energy(logits, temperature):
    return temperature * logsumexp(logits / temperature, axis=1)


@register_score("entropy", paper="negative Shannon entropy of the softmax (e.g. Chan et al., ICCV 2021)")
def negative_entropy(logits):
    log_p = logits - logsumexp(logits, axis=1, keepdims=True)
    return (np.exp(log_p) * log_p).sum(axis=1)


@register_score("gen", paper="Liu et al., CVPR 2023 (GEN): -sum over the top-M softmax p of p^g (1-p)^g, g = 0.1, "
                "M = 100", gamma=0.1, top_m=100)
def generalized_entropy(logits, gamma, top_m):
    p = np.sort(softmax(logits, axis=1), axis=1)[:, ::-1][:, :top_m]
    return -(p**gamma * (1 - p) ** gamma).sum(axis=1)


__all__ = ["FitData", "LinearHead", "OodScore", "SCORES", "ScoreNotApplicable", "register_score"]
