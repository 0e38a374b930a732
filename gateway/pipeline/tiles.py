"""Tile payloads for a backend: array views in-process, encoded images for TF Serving.

Tiles for a remote model that could not be cut losslessly from a JPEG are encoded once,
as JPEG at quality 95 with 4:4:4 chroma: the format of the camera photos the model was
trained on, visually lossless, and several times cheaper than PNG to write, send and
read (a PNG slide's tiles as PNG cost the gateway ~5x a decode and tripled the payload).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image

from gateway.backends.base import TileInput
from gateway.pipeline.images import DecodedImage
from gateway.pipeline.tiling import Tile

JPEG_QUALITY = 95


def encode_jpeg(img: Image.Image) -> bytes:
    """JPEG at quality 95, 4:4:4: what a remote model gets when the submitted bytes won't do."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


def encode_region(img: Image.Image, tile: Tile) -> bytes:
    """The tile's pixels cropped from the image, as a fresh image: no profile carried."""
    region = img.crop((tile.x0, tile.y0, tile.x1, tile.y1))
    region.info = {}
    return encode_jpeg(region)


def encoded_tiles(img: Image.Image, tiles: Sequence[Tile]) -> list[TileInput]:
    return [TileInput(t.index, t.width, t.height, encoded=encode_region(img, t)) for t in tiles]


def pixel_tiles(image: DecodedImage, tiles: Sequence[Tile]) -> list[TileInput]:
    """Views into the decoded slide, for an in-process backend: no copies."""
    return [
        TileInput(t.index, t.width, t.height, pixels=image.rgb[t.y0 : t.y1, t.x0 : t.x1])
        for t in tiles
    ]
