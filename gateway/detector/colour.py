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


def block_mean(rgb: np.ndarray, f: int) -> np.ndarray:
    """Average ``f x f`` blocks of an H x W x 3 uint8 image into float32 in 0..1.

    The last ``H % f`` rows / ``W % f`` columns are folded into the last block row/column
    by edge-padding, so nothing at the border is lost.  Works on non-contiguous views.
    """
    h, w = rgb.shape[:2]
    f = max(1, int(f))
    hb, wb = -(-h // f), -(-w // f)
    ph, pw = hb * f - h, wb * f - w
    if ph or pw:
        rgb = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="edge")
    if f == 1:
        return rgb.astype(np.float32) * np.float32(1 / 255)
    out = np.empty((hb, wb, 3), np.float32)
    for k in range(3):
        ch = rgb[:, :, k].reshape(hb, f, wb, f)
        # uint8 -> uint32 sums are exact and faster than float means
        out[:, :, k] = ch.sum(axis=(1, 3), dtype=np.uint32)
    out *= np.float32(1.0 / (255.0 * f * f))
    return out


def white_balance(img: np.ndarray) -> np.ndarray:
    """Scale channels so that the glass background is neutral white.

    The background (brightest 5 % of pixels) is assumed white; the gain is limited to
    0.9..1.25 per channel so that a tile full of cells (no glass) is left nearly alone.
    """
    if img.size == 0:
        return img
    lum = img.sum(axis=2)
    cut = np.percentile(lum, 95)
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
