"""How well two methods agree, in the terms used to compare two counting methods.

Pure functions over plain sequences, no numpy needed:

- Bland and Altman (Lancet 1986): the bias is the mean of the differences ``b - a``, the
  95% limits of agreement the bias plus and minus 1.96 standard deviations of the
  differences (sample SD, ``n - 1``); pairs outside them are counted;
- Lin's concordance correlation coefficient (Biometrics 1989):
  ``2 s_ab / (s_a^2 + s_b^2 + (mean_a - mean_b)^2)`` with moments over ``n``;
- detection F1 of a one-to-one box matching, pooled over slides: ``2M / (2M + A + B)``
  for ``M`` matched boxes and ``A``, ``B`` boxes only one method found;
- cut-off crossings: pairs on different sides of a clinical cut-off (``count >= cutoff``
  is positive, as ">= 15 eosinophils per high-power field" is);
- for labels, the agreement rate and Cohen's kappa ``(p_o - p_e) / (1 - p_e)``.

Figures that cannot be computed (too few pairs, no variance) are None, never NaN.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

Z_95 = 1.96


def mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def median(xs: Sequence[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    mid = len(s) // 2
    return float(s[mid]) if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


@dataclass(frozen=True)
class BlandAltman:
    n: int
    bias: float | None  # mean of b - a
    sd: float | None  # sample standard deviation of b - a
    lower: float | None  # bias - 1.96 sd
    upper: float | None  # bias + 1.96 sd
    outside: int  # pairs whose difference lies outside [lower, upper]


def bland_altman(a: Sequence[float], b: Sequence[float]) -> BlandAltman:
    _same_length(a, b)
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    if n == 0:
        return BlandAltman(0, None, None, None, None, 0)
    bias = sum(diffs) / n
    if n < 2:
        return BlandAltman(n, bias, None, None, None, 0)
    sd = math.sqrt(sum((d - bias) ** 2 for d in diffs) / (n - 1))
    lower, upper = bias - Z_95 * sd, bias + Z_95 * sd
    outside = sum(1 for d in diffs if d < lower or d > upper)
    return BlandAltman(n, bias, sd, lower, upper, outside)


def lin_ccc(a: Sequence[float], b: Sequence[float]) -> float | None:
    _same_length(a, b)
    n = len(a)
    if n == 0:
        return None
    ma, mb = sum(a) / n, sum(b) / n
    va = sum((x - ma) ** 2 for x in a) / n
    vb = sum((y - mb) ** 2 for y in b) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True)) / n
    denom = va + vb + (ma - mb) ** 2
    if denom == 0:  # both constant and equal: identical, but no variance to judge by
        return None
    return 2 * cov / denom


def pooled_f1(matched: int, only_a: int, only_b: int) -> float | None:
    denom = 2 * matched + only_a + only_b
    return None if denom == 0 else 2 * matched / denom


def cutoff_crossings(a: Sequence[float], b: Sequence[float], cutoff: float) -> int:
    """Pairs that one method puts at or above ``cutoff`` and the other below it."""
    _same_length(a, b)
    return sum(1 for x, y in zip(a, b, strict=True) if (x >= cutoff) != (y >= cutoff))


def agreement_rate(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    _same_length(a, b)
    if not a:
        return None
    return sum(1 for x, y in zip(a, b, strict=True) if x == y) / len(a)


def cohens_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """None when chance agreement is certain (both always give the same one label)."""
    _same_length(a, b)
    n = len(a)
    if n == 0:
        return None
    p_o = sum(1 for x, y in zip(a, b, strict=True) if x == y) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[k] * cb[k] for k in ca) / (n * n)
    if p_e == 1:
        return None
    return (p_o - p_e) / (1 - p_e)


def _same_length(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"paired figures need pairs: {len(a)} against {len(b)}")
