"""Working out the cell diameter when the caller does not state it.

Why: the same detector serves photographs taken at different magnifications (cells of
~40 px to ~70 px on the reference slides).  Every spatial parameter (smoothing, peak
spacing, box size) is a fraction of the cell diameter, so the diameter is measured
from the image itself: stained objects (eosin-red cytoplasm or dark nuclei) are segmented
at the reduced resolution, and the objects that contain *both* eosin and a nucleus, i.e.
eosinophil-like cells, are measured by their area.  A low quantile of their equivalent
diameters is used because touching cells merge into larger objects.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

DEFAULT_DIAMETER_PX = 45.0
"""Used when an image has no eosinophil-like object to measure (then nothing is found
anyway); the scale the model behind the gateway was trained at."""

MIN_DIAMETER_PX = 16.0
MAX_DIAMETER_PX = 160.0

# Segmented eosin+nucleus area underestimates the cell (pale cytoplasm at the rim falls
# below the mask thresholds); measured on the three reference slides.
_AREA_TO_CELL = 1.25


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
    mask = ndimage.binary_opening(e | n, structure=np.ones((2, 2), bool))
    lab, count = ndimage.label(mask)
    if count == 0:
        return DEFAULT_DIAMETER_PX
    idx = np.arange(1, count + 1)
    area = np.bincount(lab.ravel(), minlength=count + 1)[1:].astype(np.float64)
    e_area = np.bincount(lab.ravel(), weights=e.ravel(), minlength=count + 1)[1:]
    n_area = np.bincount(lab.ravel(), weights=n.ravel(), minlength=count + 1)[1:]
    diam = 2.0 * np.sqrt(area / np.pi) * f * _AREA_TO_CELL
    ok = (
        (e_area >= 0.25 * area)
        & (n_area >= 0.08 * area)
        & (diam >= MIN_DIAMETER_PX)
        & (diam <= MAX_DIAMETER_PX * 1.5)
    )
    del idx
    if not ok.any():
        return DEFAULT_DIAMETER_PX
    d = float(np.quantile(diam[ok], 0.4))
    return float(np.clip(d, MIN_DIAMETER_PX, MAX_DIAMETER_PX))
