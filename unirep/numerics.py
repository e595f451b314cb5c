"""The one NaN/Inf check: arrays that go on to a cache, a probe or an estimator are refused, with one line
naming where and how many rows, rather than turning into NaN scores later."""

from __future__ import annotations

import numpy as np

from unirep.errors import DataError

# Why features go non-finite in practice: reduced precision overflowing, or broken weights.
NON_FINITE_FEATURES_HINT = "the backbone produced non-finite features (try precision=fp32, or check the weights)"


def check_finite(array: np.ndarray, where: str, hint: str = NON_FINITE_FEATURES_HINT) -> None:
    """Raise DataError("<where>: <n> row(s) contain NaN/Inf; <hint>") unless every value is finite.

    Rows are the first axis (examples); a 0-d array counts as one row.

    Example:
        >>> check_finite(np.array([[1.0, np.inf]]), "train features")
        Traceback (most recent call last):
        unirep.errors.DataError: train features: 1 row(s) contain NaN/Inf; the backbone produced ...
    """
    finite = np.isfinite(array)
    if finite.all():
        return
    rows = int((~finite.reshape(len(finite), -1).all(axis=1)).sum()) if finite.ndim else 1
    raise DataError(f"{where}: {rows} row(s) contain NaN/Inf; {hint}")


__all__ = ["NON_FINITE_FEATURES_HINT", "check_finite"]
