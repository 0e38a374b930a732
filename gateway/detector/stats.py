"""Order statistics with numpy's default (linear) method, without ``numpy.ma``.

``np.percentile``, ``np.quantile``, ``np.median`` and ``np.unique`` import ``numpy.ma`` on
their first call, a noticeable part of a small function's cold start, for values these
few lines give to the bit (``tests/detector/test_stats.py`` compares them with numpy's).
"""

from __future__ import annotations

import numpy as np


def quantile(values: np.ndarray, q: float) -> np.generic:
    """``np.quantile(values, q)`` for a plain float ``q`` in [0, 1] (a weak scalar, as numpy
    treats it: the result keeps the values' dtype)."""
    flat = np.asarray(values).ravel()
    n = flat.size
    if n == 0:
        raise ValueError("quantile of no values")
    at = (n - 1) * q
    lo = int(np.floor(at))
    hi = min(lo + 1, n - 1)
    gamma = at - lo
    part = np.partition(flat, [lo, hi])
    a, b = part[lo], part[hi]
    diff = b - a
    # numpy's _lerp: from the nearer end, so that gamma 1 gives b exactly
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


def percentile(values: np.ndarray, p: int) -> np.generic:
    """``np.percentile(values, p)`` for an integer ``p``."""
    return quantile(values, p / 100)


def median(values: np.ndarray) -> np.generic:
    """``np.median(values)``: the middle value, or the mean of the two middle ones."""
    flat = np.asarray(values).ravel()
    n = flat.size
    if n == 0:
        raise ValueError("median of no values")
    k = n // 2
    if n % 2:
        return np.partition(flat, k)[k]
    part = np.partition(flat, [k - 1, k])
    return (part[k - 1] + part[k]) / 2
