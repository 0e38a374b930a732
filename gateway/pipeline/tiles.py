"""Tile payloads for a backend: array views in-process, encoded images for TF Serving.

Tiles for a remote model are encoded once at high quality (JPEG q95 with 4:4:4 chroma),
close to the photos the model was trained on; PNG stays PNG so a lossless slide is not
degraded.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image

from gateway.backends.base import TileInput
from gateway.pipeline.images import DecodedImage
from gateway.pipeline.tiling import Tile

JPEG_QUALITY = 95
LOSSLESS_FORMATS = ("PNG", "TIFF", "BMP", "GIF")


def _save(img: Image.Image, lossless: bool) -> bytes:
    buf = io.BytesIO()
    if lossless:
        img.save(buf, format="PNG", compress_level=1)
    else:
        img.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


def encode_tile(pixels, lossless: bool) -> bytes:
    return _save(Image.fromarray(pixels, "RGB"), lossless)


def encode_region(img: Image.Image, tile: Tile, lossless: bool) -> bytes:
    """The same bytes as :func:`encode_tile` of the tile's pixels, cropped from the image."""
    region = img.crop((tile.x0, tile.y0, tile.x1, tile.y1))
    region.info = {}  # a fresh image, as from an array: no profile or transparency carried
    return _save(region, lossless)


def encoded_tiles(img: Image.Image, fmt: str, tiles: Sequence[Tile]) -> list[TileInput]:
    lossless = fmt in LOSSLESS_FORMATS
    return [
        TileInput(t.index, t.width, t.height, encoded=encode_region(img, t, lossless))
        for t in tiles
    ]


def tile_inputs(image: DecodedImage, tiles: Sequence[Tile], encoded: bool) -> list[TileInput]:
    out = []
    lossless = image.info.format in LOSSLESS_FORMATS
    for t in tiles:
        view = image.rgb[t.y0 : t.y1, t.x0 : t.x1]
        out.append(
            TileInput(
                index=t.index,
                width=t.width,
                height=t.height,
                pixels=None if encoded else view,
                encoded=encode_tile(view, lossless) if encoded else None,
            )
        )
    return out
