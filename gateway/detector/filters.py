"""The few image filters the detector needs, in numpy only.

Why not ``scipy.ndimage``: importing it pulls in scipy.special and scipy's array-API
layer, which costs more than a whole small function's cold start, for six calls on
small 2-D arrays.  Each function here gives the result of the ``scipy.ndimage`` call it
replaces, with that call's boundary mode, origin, output dtype and label numbering
(``tests/detector/test_filters.py`` compares them on random inputs), so the detector's
output does not depend on which of the two computed it.  Only 2-D arrays are handled.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "binary_opening",
    "center_of_mass",
    "distance_transform_edt",
    "gaussian_filter",
    "label",
    "maximum_filter",
]


def _along_rows(a: np.ndarray, axis: int) -> np.ndarray:
    """The array as (line position, line) with the filtered axis first, C-contiguous:
    whole-row slices are then the fastest way to shift lines against each other."""
    return np.ascontiguousarray(a if axis == 0 else a.T)


def _back(a: np.ndarray, axis: int) -> np.ndarray:
    return a if axis == 0 else a.T


def gaussian_filter(a: np.ndarray, sigma: float, truncate: float = 3.0) -> np.ndarray:
    """``ndimage.gaussian_filter(a, sigma, mode="constant", cval=0, truncate=truncate)``.

    scipy filters axis 0 then axis 1, sums in float64 and stores each pass in the input's
    (float) dtype; its symmetric-kernel loop starts from the centre tap and adds the pairs
    ``(a[i-j] + a[i+j]) * w[j]`` from the farthest to the nearest.  Doing the same steps
    in the same order gives the same float64 sums, so results agree to the last bit on
    machines where scipy's C loop is compiled without fused multiply-adds.
    """
    a = np.asarray(a)
    if not sigma > 1e-15:  # scipy leaves such an axis alone
        return a.copy()
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    weights = (phi / phi.sum())[::-1]
    out = a
    for axis in (0, 1):
        out = _back(_correlate_symmetric(_along_rows(out, axis), weights), axis)
        out = out.astype(a.dtype, order="C")
    return out


def _correlate_symmetric(lines: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Correlate along axis 0 with an odd symmetric kernel, zeros outside (float64)."""
    r = len(weights) // 2
    n = lines.shape[0]
    padded = np.zeros((n + 2 * r, *lines.shape[1:]), np.float64)
    padded[r : r + n] = lines
    out = padded[r : r + n] * weights[r]
    pair = np.empty_like(out)
    for j in range(r, 0, -1):
        np.add(padded[r - j : r - j + n], padded[r + j : r + j + n], out=pair)
        pair *= weights[r - j]
        out += pair
    return out


def maximum_filter(a: np.ndarray, size: int, cval: float) -> np.ndarray:
    """``ndimage.maximum_filter(a, size=size, mode="constant", cval=cval)`` for finite input.

    The square window is separable: a running maximum along each axis.  Each running
    maximum takes maxima over windows of 1, 2, 4... lines (log2(size) passes) and covers
    the window with two overlapping power-of-two windows.  As in scipy, an even window
    reaches one line further back than forward.
    """
    a = np.asarray(a)
    size = int(size)
    if size < 1:
        raise ValueError("size must be at least 1")
    out = a
    for axis in (0, 1):
        out = _back(_running_max(_along_rows(out, axis), size, cval), axis)
    return np.ascontiguousarray(out)


def _running_max(lines: np.ndarray, size: int, cval: float) -> np.ndarray:
    n = lines.shape[0]
    before = size // 2
    padded = np.full((n + size - 1, *lines.shape[1:]), cval, lines.dtype)
    padded[before : before + n] = lines
    span = 1
    while 2 * span <= size:  # padded[i] becomes the maximum of padded[i : i + 2 * span]
        padded = np.maximum(padded[:-span], padded[span:])
        span *= 2
    return np.maximum(padded[:n], padded[size - span : size - span + n])


def label(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """``ndimage.label`` with the cross (4) or the full 3 x 3 (8) structure.

    Returns int32 labels 1..n numbered, like scipy, in the raster order of each object's
    first pixel.  Works on runs (horizontal stretches of set pixels, already connected):
    runs of adjacent rows that touch are joined by repeatedly hooking the larger of two
    tree roots under the smaller and jumping pointers to the roots, all vectorised, so a
    run's root ends as the first run of its object in raster order.
    """
    if connectivity not in (4, 8):
        raise ValueError("connectivity must be 4 or 8")
    m = np.asarray(mask, bool)
    labels = np.zeros(m.shape, np.int32)
    starts = m.copy()
    starts[:, 1:] &= ~m[:, :-1]
    n_runs = int(np.count_nonzero(starts))
    if n_runs == 0:
        return labels, 0
    run = np.cumsum(starts, axis=None, dtype=np.int64).reshape(m.shape) - 1
    up, down, run_up, run_down = m[:-1], m[1:], run[:-1], run[1:]
    # one witness pixel pair per pair of touching runs suffices: where they first overlap
    # one of them starts; diagonally, the lower run starts right of the upper one's end
    # or the upper run starts right of the lower one's end
    touch = [(up & down & (starts[:-1] | starts[1:]), run_up, run_down)]
    if connectivity == 8:
        touch.append((up[:, :-1] & starts[1:, 1:], run_up[:, :-1], run_down[:, 1:]))
        touch.append((starts[:-1, 1:] & down[:, :-1], run_up[:, 1:], run_down[:, :-1]))
    u = np.concatenate([ru[sel] for sel, ru, _ in touch])
    v = np.concatenate([rd[sel] for sel, _, rd in touch])
    root = _join(n_runs, u, v)
    is_root = root == np.arange(n_runs)
    number = np.cumsum(is_root, dtype=np.int32)
    labels[m] = number[root][run[m]]
    return labels, int(number[-1])


def _join(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Root (smallest member) of every node of the graph with edges ``u``-``v``."""
    root = np.arange(n)
    while u.size:
        ru, rv = root[u], root[v]
        apart = ru != rv
        u, v, ru, rv = u[apart], v[apart], ru[apart], rv[apart]
        np.minimum.at(root, np.maximum(ru, rv), np.minimum(ru, rv))
        while True:
            jumped = root[root]
            if np.array_equal(jumped, root):
                break
            root = jumped
    return root


def center_of_mass(labels: np.ndarray, count: int) -> np.ndarray:
    """(count, 2) float64 (y, x) centres of the objects labelled 1..count.

    ``ndimage.center_of_mass(labels > 0, labels, range(1, count + 1))``: every pixel of a
    binary image weighs 1, so each centre is the mean of its pixel coordinates (exact
    integer sums, hence the same bits as scipy's).
    """
    ys, xs = np.nonzero(labels)
    which = labels[ys, xs]
    n = np.bincount(which, minlength=count + 1)[1 : count + 1].astype(np.float64)
    sy = np.bincount(which, weights=ys.astype(np.float64), minlength=count + 1)[1 : count + 1]
    sx = np.bincount(which, weights=xs.astype(np.float64), minlength=count + 1)[1 : count + 1]
    return np.stack([sy / n, sx / n], axis=1)


def binary_opening(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_opening(mask, structure=np.ones((2, 2)))`` (border value 0).

    A 2 x 2 structure has no centre: scipy's erosion looks at the pixel and the ones
    above and to the left, and its dilation, with the reflected structure and shifted
    origin, spreads to the pixel and the ones below and to the right.  So a pixel is
    kept when it lies in a 2 x 2 square of set pixels.
    """
    m = np.asarray(mask, bool)
    eroded = np.zeros_like(m)
    eroded[1:, 1:] = m[1:, 1:] & m[:-1, 1:] & m[1:, :-1] & m[:-1, :-1]
    rows = eroded.copy()
    rows[:-1] |= eroded[1:]
    out = rows.copy()
    out[:, :-1] |= rows[:, 1:]
    return out


def distance_transform_edt(mask: np.ndarray) -> np.ndarray:
    """``ndimage.distance_transform_edt(mask)``: float64 exact Euclidean distance from
    each set pixel to the nearest unset one (0 on unset pixels).

    Separable and exact: per column the distance ``g`` to the nearest zero (two index
    scans), then per row ``D(x) = min over x' of (x - x')**2 + g(x')**2``
    (:func:`_row_minima`).  The result does not depend on which axis goes first, so a
    wide image is done transposed (the result is then a transposed view): the row
    pass's worst case steps along a row, which should be the short side.  An image with
    no zero at all gets scipy's answer, the distance to the point (-1, 0).
    """
    m = np.asarray(mask, bool)
    if m.size == 0:
        return np.zeros(m.shape, np.float64)
    if m.all():
        y, x = np.indices(m.shape, dtype=np.float64)
        return np.sqrt((y + 1.0) ** 2 + x**2)
    if m.shape[1] > m.shape[0]:
        return np.sqrt(_row_minima(_column_distance(np.ascontiguousarray(m.T)) ** 2)).T
    return np.sqrt(_row_minima(_column_distance(m) ** 2))


def _row_minima(f: np.ndarray) -> np.ndarray:
    """``min over x' of (x - x')**2 + f[y, x']`` for every pixel, f >= 0 (inf allowed).

    Tries ``x' = x +- dx`` for dx = 1, 2... only on pixels not yet final (one is final
    once ``dx**2`` reaches its best value): quick where every pixel is near a zero, as
    in masks of cells, whose rounds add up to a fraction of one pass over the image.
    Far from any zero (a large stained area) it would take as many rounds as there are
    pixels in between, so once the rounds have cost a whole pass the rows still open
    get the lower envelope of parabolas instead.
    """
    h, w = f.shape
    flat = f.ravel()
    best = flat.copy()
    todo = np.flatnonzero(best > 1)
    xs = todo % w
    cand = best[todo]
    dx = work = 0
    while todo.size:
        if work > f.size:
            rows, at = np.unique(todo // w, return_inverse=True)
            best[todo] = _lower_envelope(f[rows])[at, xs]
            break
        dx += 1
        work += todo.size
        left = np.where(xs >= dx, flat[np.maximum(todo - dx, 0)], np.inf)
        right = np.where(xs + dx < w, flat[np.minimum(todo + dx, f.size - 1)], np.inf)
        np.minimum(cand, np.minimum(left, right) + dx * dx, out=cand)
        final = (cand <= (dx + 1) ** 2) | (dx + 1 >= w)
        best[todo[final]] = cand[final]
        keep = ~final
        todo, xs, cand = todo[keep], xs[keep], cand[keep]
    return best.reshape(h, w)


def _lower_envelope(f: np.ndarray) -> np.ndarray:
    """``min over x' of (x - x')**2 + f[y, x']`` for whole rows, in time linear in the
    width whatever the distances (Felzenszwalb and Huttenlocher's lower envelope of
    parabolas), every row advancing one column per step side by side."""
    n, w = f.shape
    cols = np.arange(w)
    lift = f + (cols * cols).astype(np.float64)
    sites = np.zeros((n, w), np.int64)  # the envelope's parabolas, left to right
    starts = np.empty((n, w), np.float64)  # starts[r, j]: where parabola j takes over
    starts[:, 0] = -np.inf
    top = np.full(n, -1)
    finite = np.isfinite(f)
    for q in range(w):
        r = np.flatnonzero(finite[:, q])
        first = top[r] < 0
        top[r[first]] = 0
        sites[r[first], 0] = q
        r = r[~first]
        while r.size:  # pop the parabolas that q's hides, then push q's
            t = top[r]
            p = sites[r, t]
            s = (lift[r, q] - lift[r, p]) / (2.0 * (q - p))
            hidden = s <= starts[r, t]
            push, tp = r[~hidden], t[~hidden] + 1
            top[push] = tp
            sites[push, tp] = q
            starts[push, tp] = s[~hidden]
            top[r[hidden]] = t[hidden] - 1
            r = r[hidden]
    # each pixel's parabola: count the starts at or left of it (one sorted search for
    # all rows, each row's starts shifted into a range of its own)
    offset = np.arange(n)[:, None] * (w + 2)
    keys = np.where(cols[1:] <= top[:, None], np.clip(starts[:, 1:], -1, w), w + 1) + offset
    at = np.searchsorted(keys.ravel(), (offset + cols).ravel(), side="right")
    j = at.reshape(n, w) - np.arange(n)[:, None] * (w - 1)
    site = np.take_along_axis(sites, j, axis=1)
    out = (cols - site) ** 2 + np.take_along_axis(f, site, axis=1)
    out[top < 0] = np.inf
    return out


def _column_distance(m: np.ndarray) -> np.ndarray:
    """Float64 distance along each column to the nearest zero (inf if the column has none)."""
    h = m.shape[0]
    rows = np.arange(h)[:, None]
    above = np.maximum.accumulate(np.where(m, -2 * h, rows), axis=0)
    below = np.minimum.accumulate(np.where(m, 3 * h, rows)[::-1], axis=0)[::-1]
    g = np.minimum(rows - above, below - rows).astype(np.float64)
    g[g > h] = np.inf
    return g
