"""One slide through the detection pipeline: tile, stream the tiles to the backend, merge.

Kept apart from the use cases so the CLI, the benchmarks and the tests run exactly the
code the deployed function runs.  The slide's header has already been read (once, by the
use case); the slide is decoded at most once: a JPEG bound for a remote model is not
decoded at all but cut into tiles losslessly (:mod:`gateway.pipeline.jpegcut`), which
costs about a third of a decode and spares the model a second JPEG generation; every
other case decodes, crops and encodes.  Tiles reach the backend as a stream of bands of
tile rows, so the model is already working on the first band while the next is made.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from PIL import Image

from gateway.backends.base import BackendResult, Detector, TileInput
from gateway.pipeline import jpegcut
from gateway.pipeline import merge as merging
from gateway.pipeline.deadline import time_left
from gateway.pipeline.images import ImageInfo, decode, decode_image
from gateway.pipeline.tiles import encoded_tiles, pixel_tiles
from gateway.pipeline.tiling import Tile, TileSize, plan_tiles

JPEG_MCU = 16
# Each band's cut holds the slide's DCT coefficients (3-6 bytes a pixel): up to this size
# two bands are cut (or encoded) at once, above it one tile row after the other.
PARALLEL_CUT_MAX_PIXELS = 6_000_000
# A decoded slide takes 4 bytes a pixel in Pillow; a cut of a larger slide whose
# coefficients take more than that (4:4:4 JPEGs: 6) decodes instead, to bound memory.
DECODED_BYTES_PER_PIXEL = 4.0

T = TypeVar("T")


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


def tiles_for(size: TileSize, width: int, height: int) -> list[Tile]:
    return plan_tiles(width, height, size.width, size.height, size.overlap, align=JPEG_MCU)


def lossless_tiles(data: bytes, tiles: list[Tile]) -> list[TileInput] | None:
    """The tiles cut from the JPEG without decoding, or ``None`` when the cut fails."""
    encoded = jpegcut.cut(data, [(t.x0, t.y0, t.x1, t.y1) for t in tiles])
    if encoded is None:
        return None
    return [
        TileInput(index=t.index, width=t.width, height=t.height, encoded=e)
        for t, e in zip(tiles, encoded, strict=True)
    ]


def cuts_losslessly(data: bytes, info: ImageInfo) -> bool:
    """Whether the slide's tiles are to be cut from its JPEG rather than decoded."""
    if info.format != "JPEG" or info.orientation != 1 or info.mode != "RGB":
        return False
    if info.width * info.height > PARALLEL_CUT_MAX_PIXELS:
        per_pixel = jpegcut.coefficient_bytes_per_pixel(data)
        return per_pixel is not None and per_pixel <= DECODED_BYTES_PER_PIXEL
    return True


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


_helper: ThreadPoolExecutor | None = None
_helper_lock = threading.Lock()


def _helper_pool() -> ThreadPoolExecutor:
    """Threads that make the later bands while the request's own thread makes the first."""
    global _helper
    with _helper_lock:
        if _helper is None:
            _helper = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tiles")
        return _helper


def _made(make: Callable[[list[Tile]], T], bands: list[list[Tile]], parallel: bool) -> Iterator[T]:
    """Each band's tiles in order; with ``parallel`` the later bands are made meanwhile."""
    if not parallel:
        for band in bands:
            yield make(band)
        return
    later = deque(_helper_pool().submit(make, band) for band in bands[1:])
    try:
        yield make(bands[0])
        while later:
            made = later.popleft().result()  # popped: a made band is held by its consumer only
            yield made
            made = None
    finally:
        for f in later:
            f.cancel()


def _cut_stream(
    data: bytes, bands: list[list[Tile]], parallel: bool, max_pixels: int, deadline: float
) -> Iterator[list[TileInput]]:
    """Bands cut from the JPEG; a band the cut refuses is cropped from a decode instead."""
    decoded: Image.Image | None = None

    def cut(band: list[Tile]) -> list[TileInput] | None:
        time_left(deadline, "cutting the slide into tiles")
        return lossless_tiles(data, band)

    cuts = _made(cut, bands, parallel)
    for band, tiles in zip(bands, cuts, strict=True):
        if tiles is None:
            if decoded is None:
                time_left(deadline, "decoding the slide")
                decoded = decode_image(data, max_pixels)[1]
            tiles = encoded_tiles(decoded, band)
        yield tiles
        tiles = None  # not held while the next band is made


def detect_slide(
    data: bytes,
    info: ImageInfo,
    size: TileSize,
    backend: Detector,
    deadline: float,
    max_pixels: int,
    lossless: bool = True,
) -> SlideResult:
    """The slide's detections; ``info`` is its header, already read and checked."""
    time_left(deadline, "decoding the slide")
    if not backend.wants_encoded:
        image = decode(data, max_pixels)
        tiles = tiles_for(size, image.width, image.height)
        result = backend.predict([pixel_tiles(image, tiles)], deadline, slide_pixels=image.rgb)
        return _result(image.info, tiles, result)
    with _slide_in_progress() as alone:
        if lossless and cuts_losslessly(data, info):
            tiles = tiles_for(size, info.width, info.height)
            bands, parallel = _bands(tiles, info.width * info.height, split=alone)
            stream = _cut_stream(data, bands, parallel, max_pixels, deadline)
            result = backend.predict(stream, deadline)
            return _result(info, tiles, result)
        info, img = decode_image(data, max_pixels)  # the decoded size is the one tiled
        tiles = tiles_for(size, info.width, info.height)
        bands, parallel = _bands(tiles, info.width * info.height)

        def encoded(band: list[Tile]) -> list[TileInput]:
            time_left(deadline, "encoding the slide's tiles")
            return encoded_tiles(img, band)

        result = backend.predict(_made(encoded, bands, parallel), deadline)
        return _result(info, tiles, result)


def _result(info: ImageInfo, tiles: list[Tile], result: BackendResult) -> SlideResult:
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
