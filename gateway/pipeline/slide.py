"""One slide through the whole pipeline: tile, ask the backend, merge.

Kept apart from the HTTP handlers so the CLI, the benchmarks and the tests run exactly
the code the deployed function runs.  A slide is decoded at most once: a JPEG bound for a
remote model is not decoded at all but cut into tiles losslessly
(:mod:`gateway.codecs.jpegcut`), which costs about a third of a decode and spares the
model a second JPEG generation; every other case decodes, crops and encodes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from gateway.backends.base import Backend, TileInput
from gateway.codecs import jpegcut
from gateway.config import ServiceConfig
from gateway.pipeline import merge as merging
from gateway.pipeline.images import DecodedImage, ImageInfo, decode, probe
from gateway.pipeline.tiles import tile_inputs
from gateway.pipeline.tiling import Tile, plan_tiles

JPEG_MCU = 16
# Each band's cut holds the slide's DCT coefficients (3-6 bytes a pixel): up to this size
# two bands are cut at once, above it one tile row after the other to bound memory.
PARALLEL_CUT_MAX_PIXELS = 6_000_000


@dataclass(frozen=True)
class SlideResult:
    width: int
    height: int
    format: str
    tiles: list[Tile]
    detections: merging.Merged  # all the model's detections, score-sorted, not thresholded
    labels: tuple[str, ...]
    class_values: tuple[float, ...]
    model: str
    version: str | None
    backend_ms: float


def tiles_for(service: ServiceConfig, width: int, height: int) -> list[Tile]:
    t = service.tile
    return plan_tiles(width, height, t.width, t.height, t.overlap, align=JPEG_MCU)


def detect_slide(
    image: DecodedImage, service: ServiceConfig, backend: Backend, deadline: float
) -> SlideResult:
    tiles = tiles_for(service, image.width, image.height)
    inputs = tile_inputs(image, tiles, encoded=backend.wants_encoded)
    result = backend.predict(
        inputs, deadline, slide_pixels=None if backend.wants_encoded else image.rgb
    )
    return _result(image.info, tiles, result)


def lossless_tiles(data: bytes, info: ImageInfo, tiles: list[Tile]) -> list[TileInput] | None:
    """The tiles cut from the JPEG without decoding, or ``None`` when it does not apply."""
    if info.format != "JPEG" or info.orientation != 1:
        return None
    encoded = jpegcut.cut(data, [(t.x0, t.y0, t.x1, t.y1) for t in tiles])
    if encoded is None:
        return None
    return [
        TileInput(index=t.index, width=t.width, height=t.height, encoded=e)
        for t, e in zip(tiles, encoded, strict=True)
    ]


def lossless_bands(
    data: bytes, info: ImageInfo, tiles: list[Tile]
) -> tuple[list[Callable[[], list[TileInput] | None]], bool] | None:
    """The cut split into bands of tile rows, and whether to cut them at once.

    Every band's cut reads the whole slide's coefficients, so two bands cut in two
    threads finish in about half the time of one cut of all the tiles (on two cores),
    and the first tiles can be sent while the others are cut.
    """
    if info.format != "JPEG" or info.orientation != 1:
        return None
    rows: list[list[Tile]] = []
    for t in tiles:  # row by row (plan_tiles)
        if rows and rows[-1][0].y0 == t.y0:
            rows[-1].append(t)
        else:
            rows.append([t])
    parallel = info.width * info.height <= PARALLEL_CUT_MAX_PIXELS
    if parallel:
        half = (len(rows) + 1) // 2
        bands = [rows[:half], rows[half:]] if len(rows) > 1 else [rows]
    else:
        bands = [[row] for row in rows]
    cutters = [
        functools.partial(lossless_tiles, data, info, [t for row in band for t in row])
        for band in bands
    ]
    return cutters, parallel and len(cutters) > 1


def detect_slide_bytes(
    data: bytes,
    max_pixels: int,
    service: ServiceConfig,
    backend: Backend,
    deadline: float,
    lossless: bool = True,
) -> SlideResult:
    """The slide from its submitted bytes; decodes only when the tiles need pixels."""
    if lossless and backend.wants_encoded:
        info = probe(data, max_pixels)
        tiles = tiles_for(service, info.width, info.height)
        predict_groups = getattr(backend, "predict_groups", None)
        bands = lossless_bands(data, info, tiles) if predict_groups else None
        if bands is not None:
            result = predict_groups(bands[0], deadline, parallel=bands[1])
            if result is not None:
                return _result(info, tiles, result)
        elif predict_groups is None:
            inputs = lossless_tiles(data, info, tiles)
            if inputs is not None:
                return _result(info, tiles, backend.predict(inputs, deadline))
    return detect_slide(decode(data, max_pixels), service, backend, deadline)


def _result(info: ImageInfo, tiles: list[Tile], result) -> SlideResult:
    merged = merging.merge(tiles, result.tiles, info.width, info.height)
    return SlideResult(
        width=info.width,
        height=info.height,
        format=info.format,
        tiles=tiles,
        detections=merged,
        labels=result.labels,
        class_values=result.class_values,
        model=result.model,
        version=result.version,
        backend_ms=result.backend_ms,
    )
