"""Working out the cell diameter when the caller does not state it.

Why: the same detector serves photographs taken at different magnifications (cells of
~40 px to ~70 px on the reference slides).  Every spatial parameter (smoothing, peak
spacing, box size) is a fraction of the cell diameter, so the diameter is measured
from the image itself: stained objects (eosin-red cytoplasm or dark nuclei) are segmented
at the reduced resolution, and the objects that contain *both* eosin and a nucleus, i.e.
eosinophil-like cells, are measured by their area.  Touching cells merge into larger
objects; they are recognised by comparing the area-equivalent diameter with the diameter
of the largest inscribed circle (from a distance transform): about 1.0-1.3 for one
cell, 1.4 and more for two or more.  The median over single-looking objects is used.
"""

from __future__ import annotations

import numpy as np

from . import filters, stats

DEFAULT_DIAMETER_PX = 45.0
"""Used when an image has no eosinophil-like object to measure (then nothing is found
anyway); the scale the model behind the gateway was trained at."""

MIN_DIAMETER_PX = 16.0
MAX_DIAMETER_PX = 160.0

# Segmented eosin+nucleus area underestimates the cell (pale cytoplasm at the rim falls
# below the mask thresholds): equivalent diameter / true diameter ~0.8 on the three
# reference slides (cells ~44, ~60, ~73 px).
_AREA_TO_CELL = 1.25
# Objects whose equivalent / inscribed diameter ratio exceeds this are taken to be
# clumps of touching cells.
_SINGLE_RATIO = 1.35


def estimate_diameter(eosin: np.ndarray, nucleus: np.ndarray, f: int) -> float:
    """Estimate the eosinophil diameter in full-resolution pixels.

    ``eosin`` and ``nucleus`` are the membership maps at the reduced resolution (one
    pixel = ``f`` x ``f`` image pixels).  Returns :data:`DEFAULT_DIAMETER_PX` when no
    eosinophil-like object is found.
    """
    if eosin.size == 0:
        return DEFAULT_DIAMETER_PX
    e = eosin > 0.5
    n = nucleus > 0.5
    mask = filters.binary_opening(e | n)
    lab, count = filters.label(mask, connectivity=4)
    if count == 0:
        return DEFAULT_DIAMETER_PX
    # per-object maximum of the distance transform (ufunc.at: no sort)
    edt = filters.distance_transform_edt(mask).astype(np.float32)
    r_in = np.zeros(count + 1, np.float32)
    sel = lab > 0
    np.maximum.at(r_in, lab[sel], edt[sel])
    inscribed = 2.0 * r_in[1:].astype(np.float64)
    area = np.bincount(lab.ravel(), minlength=count + 1)[1:].astype(np.float64)
    e_area = np.bincount(lab.ravel(), weights=e.ravel(), minlength=count + 1)[1:]
    n_area = np.bincount(lab.ravel(), weights=n.ravel(), minlength=count + 1)[1:]
    equiv = 2.0 * np.sqrt(area / np.pi)
    diam = equiv * f * _AREA_TO_CELL
    ok = (
        (e_area >= 0.25 * area)
        & (n_area >= 0.08 * area)
        & (diam >= MIN_DIAMETER_PX)
        & (diam <= MAX_DIAMETER_PX * 1.5)
    )
    if not ok.any():
        return DEFAULT_DIAMETER_PX
    single = ok & (equiv <= _SINGLE_RATIO * np.maximum(inscribed, 1.0))
    if single.any():
        d = float(stats.median(diam[single]))
    else:  # only clumps: a clump of k cells has ~k times the area of one
        d = float(stats.quantile(diam[ok], 0.25)) / np.sqrt(2.0)
    return float(np.clip(d, MIN_DIAMETER_PX, MAX_DIAMETER_PX))
