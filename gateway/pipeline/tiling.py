"""Tiling geometry as pure functions.

The model was trained on 960x720 tiles cut from 1920x1440 slides, so a slide is cut into
tiles close to that size (0.9x-1.15x of it in each dimension, never upscaled) instead of
being shrunk to one input.  Neighbouring tiles overlap by at least ``overlap`` pixels:
when the overlap is at least a cell's diameter, every cell lies whole inside at least one
tile, which is what lets :mod:`gateway.pipeline.merge` keep only whole views of cells.

Tile origins fall on a grid of ``align`` pixels (16 = a JPEG MCU) so JPEG slides can be
cut losslessly without decoding; alignment is dropped when the tile size leaves no room
for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_SCALE = 0.9
MAX_SCALE = 1.15


@dataclass(frozen=True)
class TileSize:
    """The tiles a model is given: about this size, overlapping by at least ``overlap``
    (at least the largest cell's diameter, so every cell is whole in one tile)."""

    width: int = 960
    height: int = 720
    overlap: int = 128


@dataclass(frozen=True)
class Tile:
    index: int
    x0: int
    y0: int
    x1: int  # exclusive
    y1: int  # exclusive

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def axis_spans(length: int, size: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """Cut ``[0, length)`` into spans of about ``size`` that overlap by >= ``overlap``.

    Uses the fewest spans whose size stays within ``MAX_SCALE * size``; spans are at least
    ``size`` long (or the whole axis when it is shorter), consecutive spans overlap by at
    least ``overlap`` and the union is exactly ``[0, length)``.
    """
    if length <= 0:
        raise ValueError("length must be positive")
    if size <= 0 or overlap < 0:
        raise ValueError("size must be positive and overlap non-negative")
    cap = math.floor(MAX_SCALE * size)
    if length <= cap:
        return [(0, length)]
    if align < 1 or cap - 2 * (align - 1) - overlap < 1 or cap - (align - 1) < size:
        align = 1
    slack = align - 1
    usable = cap - slack  # the last span may grow by up to ``slack``
    if usable <= overlap + slack:
        raise ValueError("overlap too large for the tile size")
    n = 2
    while True:
        needed = math.ceil((length + (n - 1) * (overlap + slack)) / n)
        if needed <= usable:
            break
        n += 1
    span = min(max(needed, size), usable)
    step = (length - span) / (n - 1)
    starts = [(math.floor(i * step) // align) * align for i in range(n - 1)]
    starts.append(((length - span) // align) * align)  # exact: no floating-point drift
    spans = [(s, s + span) for s in starts[:-1]]
    spans.append((starts[-1], length))
    return spans


def plan_tiles(
    width: int, height: int, tile_width: int, tile_height: int, overlap: int, align: int = 1
) -> list[Tile]:
    """The tiles of a ``width`` x ``height`` image, row by row."""
    xs = axis_spans(width, tile_width, overlap, align)
    ys = axis_spans(height, tile_height, overlap, align)
    tiles = []
    for y0, y1 in ys:
        for x0, x1 in xs:
            tiles.append(Tile(len(tiles), x0, y0, x1, y1))
    return tiles
