"""The contract every training-free transferability estimator honours, and the input checks they share.

An estimator is a pure function of cached features: `score(features, labels, source_logits=None) -> float`,
higher meaning "this backbone should transfer better to this task". Nothing is trained on the target task
beyond closed-form or unsupervised fits (LogME's evidence, a GMM), so a score costs a fraction of a probe's
C sweep. Estimators that read the backbone's *source* classifier (LEEP, NCE) say so with
`needs_source_head = True`; they ignore `features`.

Estimators follow the scikit-learn convention of storing `__init__` arguments untouched (so `get_params()`
names the exact settings a record used) and keep no state between calls.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from unirep.errors import DataError
from unirep.numerics import check_finite


class Estimator(BaseEstimator):
    """Base class: subclasses set `name`/`needs_source_head` and implement `_score` on checked inputs.

    Attributes:
        name: the registered name (set by the registry decorator's caller, repeated here for records).
        needs_source_head: True when `score` requires `source_logits` from the backbone's source classifier.
        scale_invariant: True when multiplying the features by a positive constant leaves the score unchanged
            (up to the estimator's numerical tolerance); tests hold every estimator flagged so to it.
        label_free: True when the score reads no labels (RankMe, alpha-ReQ: what the representation is, not how it
            fits the task); the labels are still checked, and tests hold these to ignoring them.
    """

    name: ClassVar[str] = ""
    needs_source_head: ClassVar[bool] = False
    scale_invariant: ClassVar[bool] = False
    label_free: ClassVar[bool] = False

    def score(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        source_logits: np.ndarray | None = None,
        *,
        backbone: str | None = None,
    ) -> float:
        """Transferability of `features` (N, D) to integer `labels` (N,); higher is better.

        Args:
            features: one row per target example (float; cast to float64).
            labels: integer class ids (any values; remapped to 0..C-1 internally, so relabelling is harmless).
            source_logits: (N, K) logits of the backbone's source classifier, for estimators that need them.
            backbone: the backbone's name, only to make the error for missing source logits specific.
        """
        X = check_features(features)
        y = encode_labels(labels, len(X))
        logits = None
        if self.needs_source_head:
            logits = check_source_logits(source_logits, len(X), backbone)
        return float(self._score(X, y, logits))

    def score_with_details(self, features: np.ndarray, labels: np.ndarray, source_logits: np.ndarray | None = None,
                           *, backbone: str | None = None) -> tuple[float, dict]:
        """`score` and the numbers behind it worth keeping in the record (e.g. the raw NC1 when the score is
        -log10 NC1); `{}` for estimators whose score is already the number."""
        return self.score(features, labels, source_logits, backbone=backbone), {}

    def _score(self, X: np.ndarray, y: np.ndarray, source_logits: np.ndarray | None) -> float:
        raise NotImplementedError  # pragma: no cover - abstract

    def identity(self) -> dict:
        """Name and settings, for result records (`extra.estimator`)."""
        return {"name": self.name, **self.get_params()}


def check_features(features: np.ndarray) -> np.ndarray:
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"estimator features must be a non-empty (N, D) array, got shape {X.shape}")
    check_finite(X, "estimator features")
    return X


def encode_labels(labels: np.ndarray, n_rows: int) -> np.ndarray:
    """Labels as 0..C-1 (order of the sorted original ids); at least two classes are required."""
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n_rows:
        raise DataError(f"estimator labels must have shape ({n_rows},) to match the features, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"estimator labels must be integer class ids, got dtype {y.dtype}")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"estimators need at least 2 classes in the labels, found {len(classes)}")
    return codes.astype(np.int64)


def check_source_logits(source_logits: np.ndarray | None, n_rows: int, backbone: str | None) -> np.ndarray:
    if source_logits is None:
        raise DataError(
            f"backbone {backbone or '?'} has no source classification head; LEEP/NCE need one "
            "(use a packaged ImageNet backbone or a unirep source network)"
        )
    logits = np.asarray(source_logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] != n_rows or logits.shape[1] < 2:
        raise DataError(
            f"source logits must have shape ({n_rows}, K>=2) to match the features, got {logits.shape}; "
            "pass the source head's logits for the same examples"
        )
    check_finite(logits, "source logits", hint="check the backbone's source head (try precision=fp32)")
    return logits


def class_one_hot(y: np.ndarray) -> np.ndarray:
    """(N, C) indicator matrix of encoded labels."""
    onehot = np.zeros((len(y), int(y.max()) + 1))
    onehot[np.arange(len(y)), y] = 1.0
    return onehot


def log_expected_empirical_prediction(posteriors: np.ndarray, y: np.ndarray) -> float:
    """LEEP's core (Nguyen et al. 2020) for any source-label posteriors theta (N, Z), rows summing to 1.

    P(y, z) = mean_i theta_i(z) [y_i = y];  P(y | z) = P(y, z) / P(z);  score = mean_i log sum_z P(y_i | z) theta_i(z).
    Shared by LEEP (theta = softmax of source logits) and NLEEP (theta = GMM posteriors).
    """
    joint = class_one_hot(y).T @ posteriors / len(y)  # (C, Z)
    p_z = joint.sum(axis=0, keepdims=True)
    # A source label no example puts mass on has no defined P(y | z); it multiplies theta(z) = 0 anyway.
    p_y_given_z = np.divide(joint, p_z, out=np.zeros_like(joint), where=p_z > 0)
    expected = np.einsum("nz,nz->n", posteriors, p_y_given_z[y])
    return float(np.mean(np.log(np.maximum(expected, np.finfo(np.float64).tiny))))
