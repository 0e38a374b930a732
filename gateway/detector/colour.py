"""Colour features of H&E photographs, computed at a reduced resolution.

Why a reduced resolution: an eosinophil is 35-75 px across in the photographs the gateway
receives, while every decision the detector makes (is there eosin-red cytoplasm here, is
there a dark nucleus here) is about areas of a few pixels at a scale of ~3 px.  Averaging
``f x f`` blocks first makes every later step ``f**2`` times cheaper and removes JPEG
noise; granules are averaged into a uniform orange-red, which is what we measure.

Why these features instead of a full colour deconvolution: the two quantities needed are
linear/min expressions of R, G, B that separate the classes seen on the slides
(values 0..1, sampled from ``shared/data``):

===================  ====  ====  ====  =========  =========
class                 R     G     B    R-G        B-R
===================  ====  ====  ====  =========  =========
eosin cytoplasm      .77   .36   .60   .41        -.17
nucleus (H)          .20   .08   .45   .12        +.25
pink stroma          .87   .70   .83   .17        -.04
background (glass)   .89   .86   .86   .03        -.03
===================  ====  ====  ====  =========  =========

so ``eosin = (R - G) - max(B - R, 0)`` is high only in eosinophilic cytoplasm (and red
blood cells), and ``nucleus`` is "dark green channel with blue above red".
"""

from __future__ import annotations

import numpy as np

from . import stats

MAX_FACTOR = 16
"""Largest block size: 16 * 16 * 255 still fits the uint16 accumulators."""


def block_mean(rgb: np.ndarray, f: int) -> np.ndarray:
    """Average ``f x f`` blocks of an H x W x 3 uint8 image into float32 in 0..1.

    Trailing rows/columns that do not fill a block form a last, partial block (its mean
    is over the pixels it has), so nothing at the border is lost.  Works on
    non-contiguous views.  Implemented as strided uint16 additions of whole rows, which
    is ~8x faster than ``reshape(...).sum(axis=(1, 3))`` (a strided reduction).
    """
    f = int(min(max(1, f), MAX_FACTOR))
    if f == 1:
        return rgb.astype(np.float32) * np.float32(1 / 255)
    h, w = rgb.shape[:2]
    hb, hr = divmod(h, f)
    wb, wr = divmod(w, f)
    # rows: (H, W, 3) -> (Hb, W, 3)
    parts = []
    if hb:
        m = rgb[: hb * f].reshape(hb, f, w, 3)
        acc = m[:, 0].astype(np.uint16)
        for i in range(1, f):
            acc += m[:, i]
        parts.append(acc)
    if hr:
        parts.append(rgb[hb * f :].sum(axis=0, dtype=np.uint16)[None])
    rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
    # columns: (Hb, W, 3) -> (Hb, Wb, 3)
    cols = []
    if wb:
        m = rows[:, : wb * f].reshape(rows.shape[0], wb, f, 3)
        acc = m[:, :, 0].astype(np.float32)
        for j in range(1, f):
            acc += m[:, :, j]
        cols.append(acc)
    if wr:
        cols.append(rows[:, wb * f :].sum(axis=1, dtype=np.float32)[:, None])
    out = cols[0] if len(cols) == 1 else np.concatenate(cols, axis=1)
    ny = np.full(out.shape[0], f, np.float32)
    nx = np.full(out.shape[1], f, np.float32)
    if hr:
        ny[-1] = hr
    if wr:
        nx[-1] = wr
    out *= (1.0 / (255.0 * ny))[:, None, None]
    out *= (1.0 / nx)[None, :, None]
    return out


def white_balance(img: np.ndarray) -> np.ndarray:
    """Scale channels so that the glass background is neutral white.

    The background (brightest 5 % of pixels) is assumed white; the gain is limited to
    0.9..1.25 per channel so that a tile full of cells (no glass) is left nearly alone.
    """
    if img.size == 0:
        return img
    lum = img.sum(axis=2)
    cut = stats.percentile(lum, 95)
    sel = lum >= cut
    ref = img[sel].mean(axis=0) if sel.any() else np.ones(3, np.float32)
    gain = np.clip(0.9 / np.maximum(ref, 1e-3), 0.9, 1.25).astype(np.float32)
    return np.minimum(img * gain, 1.0)


def stain_maps(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (eosin, nucleus) membership maps in 0..1, float32, from 0..1 RGB.

    ``eosin`` is 1 on orange-red eosinophil cytoplasm and 0 on stroma, glass and nuclei;
    ``nucleus`` is 1 on dark purple haematoxylin-stained nuclei.
    """
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    blue_excess = np.maximum(b - r, 0)
    e = (r - g) - blue_excess
    eosin = np.clip((e - 0.22) * (1 / 0.14), 0, 1)
    # nuclei: dark in green, and blue at least as strong as red
    nuc = np.clip((0.36 - g) * (1 / 0.14), 0, 1)
    nuc *= np.clip((b - r + 0.02) * (1 / 0.08), 0, 1)
    return eosin.astype(np.float32, copy=False), nuc.astype(np.float32, copy=False)
