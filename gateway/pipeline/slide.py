"""One slide through the whole pipeline: tile, ask the backend, merge.

Kept apart from the HTTP handlers so the CLI, the benchmarks and the tests run exactly
the code the deployed function runs.  A slide is decoded at most once: a JPEG bound for a
remote model is not decoded at all but cut into tiles losslessly
(:mod:`gateway.pipeline.jpegcut`), which costs about a third of a decode and spares the
model a second JPEG generation; every other case decodes, crops and encodes.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gateway.backends.base import Backend, BackendResult, TileInput
from gateway.config import ServiceConfig
from gateway.pipeline import jpegcut
from gateway.pipeline import merge as merging
from gateway.pipeline.images import DecodedImage, ImageInfo, decode, decode_image, probe
from gateway.pipeline.tiles import encoded_tiles, tile_inputs
from gateway.pipeline.tiling import Tile, plan_tiles

JPEG_MCU = 16
# Each band's cut holds the slide's DCT coefficients (3-6 bytes a pixel): up to this size
# two bands are cut (or encoded) at once, above it one tile row after the other.
PARALLEL_CUT_MAX_PIXELS = 6_000_000
# A decoded slide takes 4 bytes a pixel in Pillow; a cut of a larger slide whose
# coefficients take more than that (4:4:4 JPEGs: 6) decodes instead, to bound memory.
DECODED_BYTES_PER_PIXEL = 4.0


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


_slides_lock = threading.Lock()
_slides_in_progress = 0


@contextmanager
def _slide_in_progress() -> Iterator[bool]:
    """Counts the slides this process is making tiles for; yields True when it is the only one."""
    global _slides_in_progress
    with _slides_lock:
        _slides_in_progress += 1
        alone = _slides_in_progress == 1
    try:
        yield alone
    finally:
        with _slides_lock:
            _slides_in_progress -= 1


def _bands(tiles: list[Tile], pixels: int, split: bool = True) -> tuple[list[list[Tile]], bool]:
    """Tiles in bands of whole tile rows, and whether to make the bands at once.

    Cutting a band reads the whole slide's coefficients, so two bands cut in two threads
    finish in about half the time of one cut of all the tiles (on two cores) for a second
    read's worth of CPU: worth it only with a core to spare, so ``split=False`` (other
    slides in progress) makes one band.  Large slides go one tile row at a time, so only
    one row of tiles is held at once.
    """
    rows: list[list[Tile]] = []
    for t in tiles:  # row by row (plan_tiles)
        if rows and rows[-1][0].y0 == t.y0:
            rows[-1].append(t)
        else:
            rows.append([t])
    if pixels <= PARALLEL_CUT_MAX_PIXELS:
        half = (len(rows) + 1) // 2
        groups = [rows[:half], rows[half:]] if split and len(rows) > 1 else [rows]
        return [[t for row in g for t in row] for g in groups], len(groups) > 1
    return rows, False


def lossless_bands(
    data: bytes, info: ImageInfo, tiles: list[Tile], split: bool = True
) -> tuple[list[Callable[[], list[TileInput] | None]], bool] | None:
    """The cut split into bands of tile rows, and whether to cut them at once."""
    if info.format != "JPEG" or info.orientation != 1:
        return None
    pixels = info.width * info.height
    if pixels > PARALLEL_CUT_MAX_PIXELS:
        per_pixel = jpegcut.coefficient_bytes_per_pixel(data)
        if per_pixel is None or per_pixel > DECODED_BYTES_PER_PIXEL:
            return None
    bands, parallel = _bands(tiles, pixels, split)
    return [functools.partial(lossless_tiles, data, info, band) for band in bands], parallel


def decoded_bands(
    data: bytes, max_pixels: int, service: ServiceConfig
) -> tuple[ImageInfo, list[Tile], list[Callable[[], list[TileInput]]], bool]:
    """The plain path for a remote model: decode once, crop and encode band by band."""
    info, img = decode_image(data, max_pixels)
    tiles = tiles_for(service, info.width, info.height)
    bands, parallel = _bands(tiles, info.width * info.height)
    makers = [functools.partial(encoded_tiles, img, band) for band in bands]
    return info, tiles, makers, parallel


def detect_slide_bytes(
    data: bytes,
    max_pixels: int,
    service: ServiceConfig,
    backend: Backend,
    deadline: float,
    lossless: bool = True,
) -> SlideResult:
    """The slide from its submitted bytes; decodes only when the tiles need pixels."""
    predict_groups = getattr(backend, "predict_groups", None) if backend.wants_encoded else None
    if predict_groups is None:
        return _detect_slide_bytes(data, max_pixels, service, backend, deadline, lossless)
    with _slide_in_progress() as alone:
        return _detect_slide_bytes(
            data, max_pixels, service, backend, deadline, lossless, predict_groups, alone
        )


def _detect_slide_bytes(
    data: bytes,
    max_pixels: int,
    service: ServiceConfig,
    backend: Backend,
    deadline: float,
    lossless: bool,
    predict_groups: Callable[..., BackendResult | None] | None = None,
    alone: bool = False,
) -> SlideResult:
    if lossless and backend.wants_encoded:
        info = probe(data, max_pixels)
        tiles = tiles_for(service, info.width, info.height)
        if predict_groups is None:
            inputs = lossless_tiles(data, info, tiles)
            if inputs is not None:
                return _result(info, tiles, backend.predict(inputs, deadline))
        else:
            bands = lossless_bands(data, info, tiles, split=alone)
            result = None if bands is None else predict_groups(bands[0], deadline, bands[1])
            if result is not None:
                return _result(info, tiles, result)
    if predict_groups is not None:
        info, tiles, makers, parallel = decoded_bands(data, max_pixels, service)
        result = predict_groups(makers, deadline, parallel)
        if result is None:
            raise AssertionError("encoding a decoded band cannot fail over to another path")
        return _result(info, tiles, result)
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
