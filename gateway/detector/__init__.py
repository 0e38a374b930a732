"""Embedded eosinophil detector for H&E slide photographs (numpy only).

Method (see ``docs/detector.md``): average the image in small blocks, compute an
eosin-cytoplasm map and a nucleus map from RGB (:mod:`.colour`), work out the cell
diameter if it is not given (:mod:`.scale`), smooth both maps with a Gaussian of
sigma = diameter / 4 and take one local maximum per cell (:mod:`.candidates`), then
score each maximum from the eosin and nucleus content of its window (:mod:`.scoring`).
Boxes are centred on the maxima and sized from the diameter.

Only numpy is imported with the package; the pipeline's submodules (their image
filters in :mod:`.filters`) are loaded at the first call of :func:`detect`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Detections", "detect", "estimate_cell_diameter", "MIN_SCORE"]

MIN_SCORE = 0.05
"""Candidates scoring below this are dropped inside the detector (they are never
eosinophils and would only bloat responses); callers apply their own cut (0.3)."""


class Detections(NamedTuple):
    """Detected cells: ``boxes`` float32 (N, 4) [x0, y0, x1, y1] in pixels of the input
    array, ``scores`` float32 (N,) in 0..1 (probability-like, see :mod:`.scoring`)."""

    boxes: np.ndarray
    scores: np.ndarray


def _empty() -> Detections:
    return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))


def detect(rgb: np.ndarray, cell_diameter_px: float | None = None) -> Detections:
    """Detect eosinophils in an H x W x 3 uint8 image (any size, views allowed).

    ``cell_diameter_px`` is the expected cell diameter in pixels when known; when None
    it is estimated from the image.  Deterministic; returns boxes sorted by score
    (descending).
    """
    from ._impl import run

    arr = np.asarray(rgb)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        return _empty()
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] >= 4:
        arr = arr[:, :, :3]
    elif arr.shape[2] != 3:
        return _empty()
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
    if cell_diameter_px is not None:
        d = float(cell_diameter_px)
        if not np.isfinite(d) or d <= 0:
            cell_diameter_px = None
    boxes, scores = run(arr, cell_diameter_px)
    if len(scores) == 0:
        return _empty()
    return Detections(boxes.astype(np.float32), scores.astype(np.float32))


def estimate_cell_diameter(rgb: np.ndarray) -> float:
    """The cell diameter (px) that :func:`detect` would work out for this image.

    Useful to a tiling caller: estimate once on the whole (or a downscaled) slide and
    pass the result as ``cell_diameter_px`` to every tile, so that small tiles with few
    cells do not each estimate their own scale.  Returns the default (45 px) when the
    image has no eosinophil-like object to measure.
    """
    from ._impl import estimate

    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] < 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        from .scale import DEFAULT_DIAMETER_PX

        return DEFAULT_DIAMETER_PX
    return estimate(arr[:, :, :3].astype(np.uint8, copy=False))
