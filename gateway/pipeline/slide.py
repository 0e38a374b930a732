"""One slide through the whole pipeline: tile, ask the backend, merge.

Kept apart from the HTTP handlers so the CLI, the benchmarks and the tests run exactly
the code the deployed function runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.backends.base import Backend
from gateway.config import ServiceConfig
from gateway.pipeline import merge as merging
from gateway.pipeline.images import DecodedImage
from gateway.pipeline.tiles import tile_inputs
from gateway.pipeline.tiling import Tile, plan_tiles

JPEG_MCU = 16


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
    merged = merging.merge(tiles, result.tiles, image.width, image.height)
    return SlideResult(
        width=image.width,
        height=image.height,
        format=image.info.format,
        tiles=tiles,
        detections=merged,
        labels=result.labels,
        class_values=result.class_values,
        model=result.model,
        version=result.version,
        backend_ms=result.backend_ms,
    )
