"""Estimators that read the backbone's source classifier: LEEP (Nguyen et al., ICML 2020) and NCE (Tran et al.,
ICCV 2019). Both ignore the features; they measure how well the source labels z predict the target labels y.

- LEEP: theta_i = softmax(source logits of example i); the empirical conditional P(y | z) from the soft joint
  P(y, z) = mean_i theta_i(z) [y_i = y]; score = mean_i log sum_z P(y_i | z) theta_i(z)  (<= 0).
- NCE: z_i = argmax of the source logits; score = -H(Y | Z) from the counts of (y, z) pairs (<= 0).

Neither depends on the feature scale (they never read features). NCE is invariant to any positive rescaling of
the logits; LEEP is not (a temperature changes the softmax).
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from unirep.estimators import register_estimator
from unirep.estimators.base import Estimator, log_expected_empirical_prediction


def leep(source_logits: np.ndarray, y: np.ndarray) -> float:
    return log_expected_empirical_prediction(softmax(source_logits, axis=1), y)


def negative_conditional_entropy(source_labels: np.ndarray, y: np.ndarray) -> float:
    """-H(Y | Z) = sum_{y,z} P(y, z) log P(y | z), from counts (0 log 0 = 0)."""
    _, z = np.unique(source_labels, return_inverse=True)
    counts = np.zeros((int(y.max()) + 1, int(z.max()) + 1))
    np.add.at(counts, (y, z), 1.0)
    joint = counts / len(y)
    p_y_given_z = counts / counts.sum(axis=0, keepdims=True)
    nonzero = counts > 0
    return float(np.sum(joint[nonzero] * np.log(p_y_given_z[nonzero])))


@register_estimator("leep")
class LEEP(Estimator):
    """Log expected empirical prediction over the softmax of the source logits."""

    name = "leep"
    needs_source_head = True
    scale_invariant = True  # of the features, trivially: LEEP reads only the source logits

    def _score(self, X: np.ndarray, y: np.ndarray, source_logits: np.ndarray | None) -> float:
        return leep(source_logits, y)


@register_estimator("nce")
class NCE(Estimator):
    """Negative conditional entropy of the target labels given the argmax source labels."""

    name = "nce"
    needs_source_head = True
    scale_invariant = True  # of the features, trivially: NCE reads only the source logits

    def _score(self, X: np.ndarray, y: np.ndarray, source_logits: np.ndarray | None) -> float:
        return negative_conditional_entropy(np.argmax(source_logits, axis=1), y)
