"""Synthetic per-tile detections for the merge benchmark: cells seen by every tile they touch."""

from __future__ import annotations

import numpy as np

from gateway.backends.base import TileDetections
from gateway.pipeline.tiling import Tile, plan_tiles


def _views(cells: np.ndarray, tiles: list[Tile], rng) -> list[TileDetections]:
    out = []
    for t in tiles:
        x0 = np.clip(cells[:, 0], t.x0, t.x1)
        y0 = np.clip(cells[:, 1], t.y0, t.y1)
        x1 = np.clip(cells[:, 2], t.x0, t.x1)
        y1 = np.clip(cells[:, 3], t.y0, t.y1)
        seen = (x1 - x0 > 2) & (y1 - y0 > 2)
        jitter = rng.normal(0, 0.7, (int(seen.sum()), 4))
        boxes = np.stack([x0 - t.x0, y0 - t.y0, x1 - t.x0, y1 - t.y0], axis=1)[seen] + jitter
        scores = rng.uniform(0.05, 0.99, len(boxes))
        out.append(TileDetections(boxes, scores, np.zeros(len(boxes), dtype=np.int32)))
    return out


def nine_tiles(total: int, seed: int = 0) -> tuple[list[Tile], list[TileDetections], int, int]:
    """About ``total`` raw detections (cells 30-60 px, some touching) from a 3 x 3 tiling."""
    width, height = 2600, 1900
    tiles = plan_tiles(width, height, 960, 720, 128, align=16)
    assert len(tiles) == 9, len(tiles)
    rng = np.random.default_rng(seed)
    n = total
    for _ in range(6):
        cx = rng.uniform(0, width, n)
        cy = rng.uniform(0, height, n)
        d = rng.uniform(30, 60, n)
        cells = np.stack([cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2], axis=1)
        per_tile = _views(cells, tiles, rng)
        got = sum(len(p.scores) for p in per_tile)
        if abs(got - total) <= total * 0.01:
            break
        n = int(n * total / got)
    return tiles, per_tile, width, height
