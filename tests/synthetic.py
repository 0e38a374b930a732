"""Synthetic H&E slide photographs with eosinophils at known places.

Used by the detector tests and by the gateway's seam tests (cells placed across tile seams
and at four-tile corners), so the contract is strict: every cell passed to
:func:`make_slide` is drawn as one eosinophil fully inside its (cx, cy, diameter) circle,
and distractors (red blood cells, lymphocytes, spindle-shaped stromal nuclei) are placed
clear of the cells, so the expected detection count is exactly ``len(cells)``.

The look follows the real photographs in ``shared/data``: pale pink fibrous stroma with
white gaps, eosinophils with a granular orange-red cytoplasm (eosin granules) around a
dark purple two-lobed nucleus, smooth red blood cells without a nucleus that are smaller
than eosinophils, and round dark lymphocyte nuclei with a thin rim of cytoplasm.
Everything is deterministic for a given ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

Cell = tuple[float, float, float]

# Colours (RGB, 0..255) sampled from the real slides.
_BACKGROUND = (228.0, 221.0, 222.0)
_STROMA = (222.0, 180.0, 212.0)
_CYTOPLASM = (198.0, 92.0, 155.0)
_GRANULE = (214.0, 78.0, 120.0)
_CELL_RIM = (212.0, 150.0, 190.0)
_NUCLEUS = (62.0, 24.0, 118.0)
_RBC = (206.0, 98.0, 118.0)
_LYMPH_NUCLEUS = (58.0, 30.0, 120.0)
_LYMPH_RIM = (150.0, 120.0, 185.0)
_SPINDLE = (120.0, 80.0, 160.0)


def random_cells(
    width: int,
    height: int,
    n: int,
    *,
    diameter: float = 45.0,
    seed: int = 0,
    min_gap: float = 0.0,
    margin: float | None = None,
) -> list[Cell]:
    """Place ``n`` cells of the given diameter at random, without overlaps.

    ``min_gap`` is the minimum edge-to-edge gap between two cells (0 allows touching);
    ``margin`` is the minimum distance from a cell centre to the image border (default:
    the radius, so cells lie fully inside).  Raises ``ValueError`` when the cells cannot
    be packed into the image.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if min_gap < 0:
        raise ValueError("min_gap must be >= 0")
    r = diameter / 2.0
    m = r if margin is None else float(margin)
    lo_x, hi_x = m, width - m
    lo_y, hi_y = m, height - m
    if n and (hi_x < lo_x or hi_y < lo_y):
        raise ValueError("image too small for cells of this diameter and margin")
    rng = np.random.default_rng(seed)
    min_dist = diameter + min_gap
    cells: list[Cell] = []
    attempts = 0
    max_attempts = 2000 + 500 * n
    while len(cells) < n:
        attempts += 1
        if attempts > max_attempts:
            raise ValueError(f"could only place {len(cells)} of {n} cells")
        x = float(rng.uniform(lo_x, hi_x))
        y = float(rng.uniform(lo_y, hi_y))
        if all((x - cx) ** 2 + (y - cy) ** 2 >= min_dist**2 for cx, cy, _ in cells):
            cells.append((x, y, float(diameter)))
    return cells


def _paint(img: np.ndarray, alpha: np.ndarray, y0: int, x0: int, colour) -> None:
    """Alpha-blend ``colour`` (scalar RGB or H x W x 3 array) into ``img`` at (y0, x0)."""
    h, w = alpha.shape
    H, W = img.shape[:2]
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(H, y0 + h), min(W, x0 + w)
    if ye <= ys or xe <= xs:
        return
    a = alpha[ys - y0 : ye - y0, xs - x0 : xe - x0, None]
    c = np.asarray(colour, dtype=np.float32)
    if c.ndim == 3:
        c = c[ys - y0 : ye - y0, xs - x0 : xe - x0]
    region = img[ys:ye, xs:xe]
    region *= 1.0 - a
    region += a * c


def _ellipse(yy, xx, cy, cx, ry, rx, angle, soft=1.0) -> np.ndarray:
    """Anti-aliased filled ellipse as alpha in 0..1."""
    ca, sa = math.cos(angle), math.sin(angle)
    u = (xx - cx) * ca + (yy - cy) * sa
    v = -(xx - cx) * sa + (yy - cy) * ca
    d = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    # distance to the boundary in pixels, approximately
    return np.clip((1.0 - d) * min(rx, ry) / soft + 0.5, 0.0, 1.0).astype(np.float32)


def _patch(cx: float, cy: float, radius: float) -> tuple[int, int, int, np.ndarray, np.ndarray]:
    """The square a shape of ``radius`` around (cx, cy) is painted on, 2 px to spare: its
    corner, its side and the coordinates of its pixels."""
    pad = int(math.ceil(radius)) + 2
    x0, y0 = int(math.floor(cx)) - pad, int(math.floor(cy)) - pad
    size = 2 * pad + 1
    yy, xx = np.mgrid[y0 : y0 + size, x0 : x0 + size].astype(np.float32)
    return x0, y0, size, yy, xx


def _draw_eosinophil(img, cx, cy, d, rng) -> None:
    r = d / 2.0
    x0, y0, size, yy, xx = _patch(cx, cy, r)
    # cytoplasm: irregular round cell (low-order wobble of the outline) filling most of
    # the circle, with the eosin fading towards a paler rim as in the photographs
    rr = r * rng.uniform(0.9, 0.97)
    dx, dy = xx - cx, yy - cy
    theta_px = np.arctan2(dy, dx)
    wobble = (
        1.0
        + 0.05 * np.sin(3 * theta_px + rng.uniform(0, 6.3))
        + 0.03 * np.sin(5 * theta_px + rng.uniform(0, 6.3))
    )
    rad = np.sqrt(dx * dx + dy * dy) / (rr * wobble)
    body = np.clip((1.0 - rad) * rr + 0.5, 0.0, 1.0).astype(np.float32)
    # granular texture: speckles of brighter orange-red eosin granules
    gran = rng.random((size, size)).astype(np.float32)
    gran = ndimage.gaussian_filter(gran, max(0.6, d / 60.0))
    gran = (gran - gran.mean()) / (gran.std() + 1e-6)
    base = np.empty((size, size, 3), np.float32)
    tint = rng.uniform(-12, 12)
    for k in range(3):
        base[..., k] = _CYTOPLASM[k] + (tint if k == 0 else 0.0)
    gmix = np.clip(0.5 + 0.35 * gran, 0, 1)[..., None]
    colour = base * (1 - gmix) + np.asarray(_GRANULE, np.float32) * gmix
    colour += (gran * 8.0)[..., None]
    rim = np.clip((rad - rng.uniform(0.68, 0.78)) / 0.25, 0, 1)[..., None]
    colour = colour * (1 - rim) + np.asarray(_CELL_RIM, np.float32) * rim
    _paint(img, body, y0, x0, colour)
    # bilobed nucleus: two overlapping ellipses, off-centre, random orientation
    theta = rng.uniform(0, 2 * math.pi)
    off = r * rng.uniform(0.05, 0.2)
    ncx = cx + off * math.cos(theta + 1.3)
    ncy = cy + off * math.sin(theta + 1.3)
    sep = r * rng.uniform(0.3, 0.4)
    lobe_r = r * rng.uniform(0.3, 0.36)
    nuc = np.zeros((size, size), np.float32)
    for s in (-1.0, 1.0):
        lx = ncx + s * sep * math.cos(theta)
        ly = ncy + s * sep * math.sin(theta)
        lobe = _ellipse(yy, xx, ly, lx, lobe_r * rng.uniform(0.85, 1.0), lobe_r, theta)
        nuc = np.maximum(nuc, lobe)
    nuc *= body  # stays inside the cell
    shade = rng.uniform(-15, 15)
    _paint(img, nuc * 0.95, y0, x0, tuple(c + shade for c in _NUCLEUS))


def _draw_rbc(img, cx, cy, d, rng) -> None:
    r = d / 2.0
    x0, y0, _, yy, xx = _patch(cx, cy, r)
    body = _ellipse(yy, xx, cy, cx, r * rng.uniform(0.85, 1.0), r, rng.uniform(0, math.pi))
    # smooth biconcave disc: paler centre
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / r
    pale = np.clip(1.0 - dist * 1.6, 0, 1)[..., None] * 30.0
    colour = np.asarray(_RBC, np.float32)[None, None, :] + pale
    _paint(img, body * 0.9, y0, x0, colour)


def _draw_lymphocyte(img, cx, cy, d, rng) -> None:
    r = d / 2.0
    x0, y0, _, yy, xx = _patch(cx, cy, r)
    _paint(img, _ellipse(yy, xx, cy, cx, r, r, 0.0) * 0.8, y0, x0, _LYMPH_RIM)
    nr = r * rng.uniform(0.75, 0.85)
    _paint(
        img,
        _ellipse(yy, xx, cy, cx, nr, nr * rng.uniform(0.9, 1.0), rng.uniform(0, 3.14)),
        y0,
        x0,
        _LYMPH_NUCLEUS,
    )


def _draw_spindle(img, cx, cy, length, rng) -> None:
    x0, y0, _, yy, xx = _patch(cx, cy, length / 2)
    a = _ellipse(
        yy, xx, cy, cx, length * rng.uniform(0.08, 0.14), length / 2, rng.uniform(0, math.pi)
    )
    _paint(img, a * 0.85, y0, x0, _SPINDLE)


def _stroma(height: int, width: int, scale: float, rng) -> np.ndarray:
    """Pale background with pink fibrous stroma patches and fine fibres."""
    img = np.empty((height, width, 3), np.float32)
    img[...] = _BACKGROUND
    small = (max(2, int(height / (4 * scale)) + 2), max(2, int(width / (4 * scale)) + 2))
    field = ndimage.gaussian_filter(rng.random(small).astype(np.float32), 1.0)
    field = ndimage.zoom(field, (height / small[0], width / small[1]), order=1)[:height, :width]
    if field.shape != (height, width):
        field = np.pad(
            field, ((0, height - field.shape[0]), (0, width - field.shape[1])), mode="edge"
        )
    lo, hi = float(field.min()), float(field.max())
    field = (field - lo) / (hi - lo + 1e-6)
    fib = rng.random((height, width)).astype(np.float32)
    fib = ndimage.gaussian_filter(fib, (0.7, 3.0) if rng.random() < 0.5 else (3.0, 0.7))
    fib = np.clip((fib - fib.mean()) / (fib.std() + 1e-6), -2, 2)
    density = np.clip((field - 0.4) * 2.0, 0, 1) * np.clip(0.55 + 0.2 * fib, 0, 1)
    img += density[..., None] * (np.asarray(_STROMA, np.float32) - np.asarray(_BACKGROUND))
    return img


def make_slide(
    width: int,
    height: int,
    cells: Sequence[tuple[float, float, float]],
    *,
    seed: int = 0,
    distractors: bool = True,
) -> np.ndarray:
    """Render a synthetic H&E photograph (H x W x 3 uint8) with eosinophils at ``cells``.

    ``cells`` are (cx, cy, diameter) in pixels.  With ``distractors`` the slide also gets
    red blood cells (smaller, smooth, no nucleus), lymphocytes and spindle-shaped stromal
    nuclei, placed at least a fifth of a diameter clear of every eosinophil.
    """
    rng = np.random.default_rng(seed)
    cells = [(float(x), float(y), float(d)) for x, y, d in cells]
    scale = float(np.median([c[2] for c in cells])) if cells else 45.0
    img = _stroma(height, width, scale, rng)

    if distractors:
        area = width * height
        n_each = max(1, int(area / (scale * scale * 12)))
        placed: list[tuple[float, float, float]] = []

        def free(x: float, y: float, rad: float) -> bool:
            for cx, cy, cd in cells:
                if math.hypot(x - cx, y - cy) < rad + cd / 2 + 0.2 * cd:
                    return False
            for px, py, pr in placed:
                if math.hypot(x - px, y - py) < rad + pr + 2:
                    return False
            return True

        kinds = ["rbc"] * n_each + ["lymph"] * n_each + ["spindle"] * max(1, n_each // 2)
        rng.shuffle(kinds)
        for kind in kinds:
            if kind == "rbc":
                dd = scale * rng.uniform(0.38, 0.5)
            elif kind == "lymph":
                dd = scale * rng.uniform(0.6, 0.8)
            else:
                dd = scale * rng.uniform(0.9, 1.4)
            for _ in range(30):
                x = float(rng.uniform(0, width))
                y = float(rng.uniform(0, height))
                if free(x, y, dd / 2):
                    placed.append((x, y, dd / 2))
                    if kind == "rbc":
                        _draw_rbc(img, x, y, dd, rng)
                    elif kind == "lymph":
                        _draw_lymphocyte(img, x, y, dd, rng)
                    else:
                        _draw_spindle(img, x, y, dd, rng)
                    break

    for cx, cy, d in cells:
        _draw_eosinophil(img, cx, cy, d, rng)

    # optics and sensor: slight blur, then noise
    img = ndimage.gaussian_filter(img, (0.7, 0.7, 0))
    img += rng.normal(0.0, 3.0, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
