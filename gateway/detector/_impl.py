"""The detection pipeline behind :func:`gateway.detector.detect`.

Kept apart from ``__init__`` so that importing the package stays cheap (the pipeline's
modules are loaded on first use only).
"""

from __future__ import annotations

import numpy as np

from . import candidates, colour, filters, scale, scoring

# Target size of a cell at the reduced resolution, in reduced pixels.  ~14 px keeps a
# bilobed nucleus (~1/3 diameter) at 4-5 px: enough to measure, cheap to filter.
_CELL_AT_WORK_PX = 14.0
# Box half-size as a fraction of the diameter: the box covers the whole cell plus a
# small margin for cells that are not perfectly round.
_BOX_HALF = 0.55
# Minimum distance between two cell centres, as a fraction of the diameter.
_MIN_SEPARATION = 0.55
# Centre-finding smoothing: sigma = diameter / _PEAK_SIGMA_DIV.
_PEAK_SIGMA_DIV = 6.0


def _factor(d: float, h: int, w: int) -> int:
    f = int(max(1, round(d / _CELL_AT_WORK_PX)))
    return max(1, min(f, h, w, colour.MAX_FACTOR))


def estimate(rgb: np.ndarray) -> float:
    """Cell diameter in px estimated from the image (see :mod:`.scale`)."""
    h, w = rgb.shape[:2]
    f0 = _factor(scale.DEFAULT_DIAMETER_PX, h, w)
    eos, nuc = colour.stain_maps(colour.white_balance(colour.block_mean(rgb, f0)))
    return scale.estimate_diameter(eos, nuc, f0)


def run(rgb: np.ndarray, cell_diameter_px: float | None) -> tuple[np.ndarray, np.ndarray]:
    h, w = rgb.shape[:2]
    if cell_diameter_px is None:
        f0 = _factor(scale.DEFAULT_DIAMETER_PX, h, w)
        img = colour.white_balance(colour.block_mean(rgb, f0))
        eos, nuc = colour.stain_maps(img)
        d = scale.estimate_diameter(eos, nuc, f0)
        f = _factor(d, h, w)
        if f != f0:
            img = colour.white_balance(colour.block_mean(rgb, f))
            eos, nuc = colour.stain_maps(img)
    else:
        d = float(np.clip(cell_diameter_px, 4.0, 4096.0))
        f = _factor(d, h, w)
        img = colour.white_balance(colour.block_mean(rgb, f))
        eos, nuc = colour.stain_maps(img)

    if not (eos > 0.5).any():
        return np.zeros((0, 4)), np.zeros((0,))

    dw = d / f  # diameter in working pixels
    sigma = dw / 4.0
    ge = filters.gaussian_filter(eos, sigma, truncate=3.0)
    gn = filters.gaussian_filter(nuc, sigma, truncate=3.0)
    # a narrower window for locating centres: keeps the saddle between touching cells
    # deep even when the diameter is overestimated by 20 %
    ps = dw / _PEAK_SIGMA_DIV
    cell = filters.gaussian_filter(eos + nuc, ps, truncate=3.0)
    pts = candidates.local_maxima(cell, _MIN_SEPARATION * dw, floor=0.1)
    if len(pts) == 0:
        return np.zeros((0, 4)), np.zeros((0,))
    iy = np.clip(np.rint(pts[:, 0]).astype(int), 0, ge.shape[0] - 1)
    ix = np.clip(np.rint(pts[:, 1]).astype(int), 0, ge.shape[1] - 1)
    s = scoring.score(ge[iy, ix], gn[iy, ix])
    keep = s >= 0.05
    pts, s = pts[keep], s[keep]
    # centre of a working pixel (i) in image coordinates is (i + 0.5) * f
    cy = (pts[:, 0] + 0.5) * f
    cx = (pts[:, 1] + 0.5) * f
    half = _BOX_HALF * d
    boxes = np.stack(
        [
            np.clip(cx - half, 0, w),
            np.clip(cy - half, 0, h),
            np.clip(cx + half, 0, w),
            np.clip(cy + half, 0, h),
        ],
        axis=1,
    )
    order = np.argsort(-s, kind="stable")
    return boxes[order], s[order]
