"""Finding one candidate point per cell.

Why a smoothed "cellness" map and local maxima: a stained cell (eosin cytoplasm plus
nucleus) smoothed with a Gaussian of sigma = diameter / 4 becomes a single round hill
whose top is near the cell centre, whatever the nucleus shape.  Two touching cells are
one diameter = 4 sigma apart, so their hills stay separate (the saddle between them
is clearly lower), which is what lets touching eosinophils come out as two detections.
Peaks closer than ~0.55 diameter are merged (one cell can only have one centre).
"""

from __future__ import annotations

import numpy as np

from . import filters


def local_maxima(score: np.ndarray, min_distance: float, floor: float) -> np.ndarray:
    """Return (K, 2) float array of (y, x) local maxima of ``score`` above ``floor``.

    Maxima are first taken over the square *inscribed* in the circle of radius
    ``min_distance`` (a square of half-size ``min_distance`` would reach 1.41 times
    further along its diagonals and swallow a diagonal neighbour), then maxima closer
    than ``min_distance`` are thinned by :func:`suppress_close`.  Plateaus (several
    equal maxima side by side) count once, at their centre of mass.
    """
    if score.size == 0:
        return np.zeros((0, 2), np.float64)
    size = max(3, int(2 * int(min_distance / np.sqrt(2.0)) + 1))
    mx = filters.maximum_filter(score, size, cval=-1.0)
    peaks = (score >= mx) & (score > floor)
    if not peaks.any():
        return np.zeros((0, 2), np.float64)
    lab, n = filters.label(peaks, connectivity=8)
    if n == 0:
        return np.zeros((0, 2), np.float64)
    pts = filters.center_of_mass(lab, n)
    return suppress_close(pts, score, min_distance)


def suppress_close(pts: np.ndarray, score: np.ndarray, min_distance: float) -> np.ndarray:
    """Greedy non-maximum suppression of points closer than ``min_distance``.

    The square maximum window lets two maxima survive on a diagonal or on both sides of
    a window edge; this keeps only the stronger one.  Deterministic (stable sort).
    """
    if len(pts) < 2:
        return pts
    iy = np.clip(np.rint(pts[:, 0]).astype(int), 0, score.shape[0] - 1)
    ix = np.clip(np.rint(pts[:, 1]).astype(int), 0, score.shape[1] - 1)
    order = np.argsort(-score[iy, ix], kind="stable")
    pts = pts[order]
    keep = np.ones(len(pts), bool)
    md2 = min_distance * min_distance
    for i in range(len(pts)):
        if not keep[i]:
            continue
        d2 = ((pts[i + 1 :] - pts[i]) ** 2).sum(axis=1)
        keep[i + 1 :] &= d2 >= md2
    return pts[keep]
