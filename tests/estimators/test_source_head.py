"""LEEP and NCE against direct loops over their definitions; the error when no source head exists."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from unirep.errors import DataError
from unirep.estimators import create_estimator


def leep_by_loops(logits, y):
    """Nguyen et al. 2020, eqs. (1)-(2), one example and one label at a time."""
    n, k = logits.shape
    theta = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in logits]
    classes = sorted(set(y.tolist()))
    joint = {(c, z): sum(theta[i][z] for i in range(n) if y[i] == c) / n for c in classes for z in range(k)}
    marginal = {z: sum(joint[c, z] for c in classes) for z in range(k)}
    total = 0.0
    for i in range(n):
        total += math.log(sum(joint[y[i], z] / marginal[z] * theta[i][z] for z in range(k)))
    return total / n


def nce_by_counting(source_labels, y):
    """-H(Y | Z) = sum over (y, z) of P(y, z) log(P(y, z) / P(z)) from pair counts."""
    n = len(y)
    pairs = Counter(zip(y.tolist(), source_labels.tolist(), strict=True))
    z_counts = Counter(source_labels.tolist())
    return sum(count / n * math.log(count / z_counts[z]) for (_, z), count in pairs.items())


def test_leep_equals_definition(blobs):
    X, y, logits = blobs
    assert create_estimator("leep").score(X, y, logits) == pytest.approx(leep_by_loops(logits, y), rel=1e-10)


def test_nce_equals_conditional_entropy_by_counting(blobs):
    X, y, logits = blobs
    expected = nce_by_counting(np.argmax(logits, axis=1), y)
    assert create_estimator("nce").score(X, y, logits) == pytest.approx(expected, rel=1e-12)


def test_perfect_source_labels_give_zero_nce_and_leep_near_zero():
    y = np.arange(60) % 3
    logits = np.full((60, 5), -30.0)
    logits[np.arange(60), y + 1] = 30.0
    X = np.zeros((60, 2))
    assert create_estimator("nce").score(X, y, logits) == pytest.approx(0.0, abs=1e-12)
    assert create_estimator("leep").score(X, y, logits) == pytest.approx(0.0, abs=1e-9)


def test_nce_ignores_logit_scale_leep_does_not(blobs):
    X, y, logits = blobs
    assert create_estimator("nce").score(X, y, 5 * logits) == create_estimator("nce").score(X, y, logits)
    leep = create_estimator("leep")
    assert leep.score(X, y, 5 * logits) != pytest.approx(leep.score(X, y, logits))


@pytest.mark.parametrize("name", ["leep", "nce"])
def test_missing_source_logits_is_one_clear_line(blobs, name):
    X, y, logits = blobs
    estimator = create_estimator(name)
    assert estimator.needs_source_head
    with pytest.raises(DataError) as info:
        estimator.score(X, y, backbone="resnet18")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("backbone resnet18 has no source classification head; LEEP/NCE need one")
    with pytest.raises(DataError, match="source logits must have shape"):
        estimator.score(X, y, logits[:-1])
    bad = logits.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        estimator.score(X, y, bad)
