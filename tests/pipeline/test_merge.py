"""Merge invariants: every cell exactly once, whole boxes, touching cells kept apart.

A simulated detector looks at each tile the way a real one does: a cell wholly inside the
tile gets a box around the cell (with a few pixels of noise); a cell cut by the tile edge
gets a box around the visible part only, or is missed when little of it shows.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.backends.base import TileDetections
from gateway.pipeline import merge as merge_module
from gateway.pipeline.merge import merge
from gateway.pipeline.tiling import plan_tiles

TILE_W, TILE_H, OVERLAP = 960, 720, 128


def simulate(tiles, cells, rng, jitter=2.0, miss_fragments=True):
    out = []
    for t in tiles:
        boxes, scores = [], []
        for cx, cy, d in cells:
            r = d / 2
            x0, y0, x1, y1 = cx - r, cy - r, cx + r, cy + r
            vx0, vy0 = max(x0, t.x0), max(y0, t.y0)
            vx1, vy1 = min(x1, t.x1), min(y1, t.y1)
            if vx1 <= vx0 or vy1 <= vy0:
                continue
            whole = (vx0, vy0, vx1, vy1) == (x0, y0, x1, y1)
            if not whole and miss_fragments and (vx1 - vx0) * (vy1 - vy0) < 0.15 * d * d:
                continue
            box = np.array([vx0, vy0, vx1, vy1]) - [t.x0, t.y0, t.x0, t.y0]
            noise = rng.uniform(-jitter, jitter, 4)
            # the cut edge of a fragment sits at or just inside the tile edge
            for k, (edge, lim) in enumerate([(vx0, t.x0), (vy0, t.y0), (vx1, t.x1), (vy1, t.y1)]):
                if edge == lim:
                    noise[k] = abs(noise[k]) if k < 2 else -abs(noise[k])
            boxes.append(box + noise)
            scores.append(rng.uniform(0.5, 1.0))
        out.append(
            TileDetections(
                np.array(boxes).reshape(-1, 4), np.array(scores), np.zeros(len(scores), int)
            )
        )
    return out


def check(cells, merged, width, height):
    assert len(merged) == len(cells), (len(merged), len(cells))
    truth = np.array(
        [
            [max(cx - r, 0), max(cy - r, 0), min(cx + r, width), min(cy + r, height)]
            for cx, cy, r in ((x, y, e / 2) for x, y, e in cells)
        ]
    ).reshape(-1, 4)
    used = set()
    for b in merged.boxes:
        ix0 = np.maximum(truth[:, 0], b[0])
        iy0 = np.maximum(truth[:, 1], b[1])
        ix1 = np.minimum(truth[:, 2], b[2])
        iy1 = np.minimum(truth[:, 3], b[3])
        inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
        area_t = (truth[:, 2] - truth[:, 0]) * (truth[:, 3] - truth[:, 1])
        area_b = (b[2] - b[0]) * (b[3] - b[1])
        iou = inter / (area_t + area_b - inter)
        j = int(np.argmax(iou))
        assert iou[j] > 0.75, f"box {b} does not cover a whole cell (best IoU {iou[j]:.2f})"
        assert j not in used, "a cell was reported twice"
        used.add(j)


@st.composite
def seam_layouts(draw):
    width = draw(st.integers(300, 3400))
    height = draw(st.integers(300, 2600))
    tiles = plan_tiles(width, height, TILE_W, TILE_H, OVERLAP, align=16)
    seams_x = sorted({t.x0 for t in tiles if t.x0 > 0} | {t.x1 for t in tiles if t.x1 < width})
    seams_y = sorted({t.y0 for t in tiles if t.y0 > 0} | {t.y1 for t in tiles if t.y1 < height})
    n = draw(st.integers(0, 40))
    cells: list[tuple[float, float, float]] = []
    for _ in range(n):
        d = draw(st.floats(30, 90))
        # bias towards seams, corners where four tiles meet, and the slide border
        mode = draw(st.sampled_from(["any", "seam_x", "seam_y", "corner", "touch"]))
        cx = draw(st.floats(d / 2, width - d / 2)) if width > d else width / 2
        cy = draw(st.floats(d / 2, height - d / 2)) if height > d else height / 2
        if mode in ("seam_x", "corner") and seams_x:
            cx = draw(st.sampled_from(seams_x)) + draw(st.floats(-d, d))
        if mode in ("seam_y", "corner") and seams_y:
            cy = draw(st.sampled_from(seams_y)) + draw(st.floats(-d, d))
        if mode == "touch" and cells:
            ox, oy, od = draw(st.sampled_from(cells))
            angle = draw(st.floats(0, 2 * math.pi))
            dist = (od + d) / 2 + draw(st.floats(0, 3))
            cx, cy = ox + dist * math.cos(angle), oy + dist * math.sin(angle)
        cx = min(max(cx, d / 2), width - d / 2)
        cy = min(max(cy, d / 2), height - d / 2)
        if d > min(width, height):
            continue
        # distinct cells may touch but not overlap
        if all(math.hypot(cx - x, cy - y) >= (d + e) / 2 for x, y, e in cells):
            cells.append((cx, cy, d))
    seed = draw(st.integers(0, 2**31 - 1))
    return width, height, tiles, cells, seed


@settings(max_examples=300, deadline=None)
@given(seam_layouts())
def test_every_cell_exactly_once_with_its_whole_box(layout):
    width, height, tiles, cells, seed = layout
    rng = np.random.default_rng(seed)
    merged = merge(tiles, simulate(tiles, cells, rng), width, height)
    check(cells, merged, width, height)


def test_cell_on_the_corner_of_four_tiles():
    tiles = plan_tiles(1920, 1440, TILE_W, TILE_H, OVERLAP, align=16)
    # the four tiles' overlaps meet around (880..1032, 640..792)
    cells = [(956, 716, 60), (1016, 716, 60), (956, 776, 60)]  # touching each other
    per_tile = simulate(tiles, cells, np.random.default_rng(1), jitter=0)
    assert sum(len(d.scores) for d in per_tile) > len(cells)  # seen by several tiles
    merged = merge(tiles, per_tile, 1920, 1440)
    check(cells, merged, 1920, 1440)


def test_touching_cells_inside_one_tile_are_never_fused():
    tiles = plan_tiles(1920, 1440, TILE_W, TILE_H, OVERLAP, align=16)
    cells = [(200, 200, 50), (250, 200, 50), (300, 200, 50), (250, 250, 50)]
    merged = merge(tiles, simulate(tiles, cells, np.random.default_rng(2)), 1920, 1440)
    check(cells, merged, 1920, 1440)


def test_degenerate_and_out_of_range_boxes_from_the_backend_are_dropped_or_clipped():
    tiles = plan_tiles(1920, 1440, TILE_W, TILE_H, OVERLAP, align=16)
    bad = TileDetections(
        np.array(
            [
                [np.nan, 0, 10, 10],
                [5, 5, 5, 5],  # zero area
                [-50, -50, 30, 30],  # partly outside the tile: clipped
                [2000, 2000, 3000, 3000],  # wholly outside: dropped
                [40, 40, 20, 20],  # reversed corners: normalized
                [100, 100, 150, 150],
            ]
        ),
        np.array([0.9, 0.9, 0.8, 0.9, 0.7, np.inf]),
        np.zeros(6, int),
    )
    empty = TileDetections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))
    merged = merge(tiles, [bad] + [empty] * (len(tiles) - 1), 1920, 1440)
    assert len(merged) == 2
    assert np.all(merged.boxes >= 0)
    assert np.all(merged.boxes[:, 2] > merged.boxes[:, 0])
    assert sorted(merged.scores.tolist(), reverse=True) == merged.scores.tolist()


def test_cell_larger_than_the_overlap_is_still_reported_once():
    tiles = plan_tiles(1920, 1440, TILE_W, TILE_H, OVERLAP, align=16)
    cells = [(956, 300, 200)]  # wider than the 152 px overlap: no tile sees it whole
    merged = merge(tiles, simulate(tiles, cells, np.random.default_rng(3), jitter=0), 1920, 1440)
    assert len(merged) == 1
    x0, y0, x1, y1 = merged.boxes[0]
    assert x0 <= 857 and x1 >= 1055  # the union of the fragments covers the cell


def test_requires_one_entry_per_tile():
    tiles = plan_tiles(1920, 1440, TILE_W, TILE_H, OVERLAP)
    with pytest.raises(ValueError):
        merge(tiles, [], 1920, 1440)


class _CountingUfunc:
    def __init__(self, ufunc, counter: _CountingNumpy) -> None:
        self._ufunc, self._counter = ufunc, counter

    def __call__(self, a, b, *args, **kwargs):
        self._counter.compared += np.broadcast(a, b).size
        return self._ufunc(a, b, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._ufunc, name)  # .reduce and the like: not pair comparisons


class _CountingNumpy:
    """numpy as gateway.pipeline.merge sees it, counting the element pairs that
    ``np.minimum`` and ``np.maximum`` compare: every test of two boxes' edges against each
    other (overlap, intersection) goes through them."""

    def __init__(self) -> None:
        self.compared = 0
        self.minimum = _CountingUfunc(np.minimum, self)
        self.maximum = _CountingUfunc(np.maximum, self)

    def __getattr__(self, name: str):
        return getattr(np, name)


def _merge_counted(monkeypatch, width: int, height: int) -> tuple[int, int]:
    """(detections, edge comparisons) of one merge of a slide densely packed with cells."""
    tiles = plan_tiles(width, height, TILE_W, TILE_H, OVERLAP, align=16)
    cells = [(x, y, 20.0) for x in range(15, width - 10, 38) for y in range(15, height - 10, 38)]
    per_tile = simulate(tiles, cells, np.random.default_rng(4), jitter=1.0)
    counting = _CountingNumpy()
    with monkeypatch.context() as m:
        m.setattr(merge_module, "np", counting)
        merged = merge(tiles, per_tile, width, height)
    check(cells, merged, width, height)
    return sum(len(d.scores) for d in per_tile), counting.compared


def test_merge_work_grows_linearly_with_the_detections(monkeypatch):
    """Four times the slide, four times the detections: the merge compares about four times
    as many box edges, not sixteen (all pairs).  Counted, not timed."""
    n, compared = _merge_counted(monkeypatch, 2800, 2100)  # 9 tiles
    n4, compared4 = _merge_counted(monkeypatch, 5600, 4200)  # 42 tiles
    assert n > 5000 and n4 > 4 * n
    assert compared4 / n4 < 2 * compared / n
    assert compared4 < n4 * n4 / 100  # far from comparing every pair
