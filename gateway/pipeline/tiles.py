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


def _save(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


def encode_tile(pixels) -> bytes:
    return _save(Image.fromarray(pixels, "RGB"))


def encode_region(img: Image.Image, tile: Tile) -> bytes:
    """The same bytes as :func:`encode_tile` of the tile's pixels, cropped from the image."""
    region = img.crop((tile.x0, tile.y0, tile.x1, tile.y1))
    region.info = {}  # a fresh image, as from an array: no profile or transparency carried
    return _save(region)


def encoded_tiles(img: Image.Image, tiles: Sequence[Tile]) -> list[TileInput]:
    return [TileInput(t.index, t.width, t.height, encoded=encode_region(img, t)) for t in tiles]


def tile_inputs(image: DecodedImage, tiles: Sequence[Tile], encoded: bool) -> list[TileInput]:
    out = []
    for t in tiles:
        view = image.rgb[t.y0 : t.y1, t.x0 : t.x1]
        out.append(
            TileInput(
                index=t.index,
                width=t.width,
                height=t.height,
                pixels=None if encoded else view,
                encoded=encode_tile(view) if encoded else None,
            )
        )
    return out
