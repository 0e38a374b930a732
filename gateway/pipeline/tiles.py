"""Tile payloads for a backend: array views in-process, encoded images for TF Serving.

Tiles for a remote model that could not be cut losslessly from a JPEG are encoded once, as
JPEG: several times cheaper than PNG to write, send and read, for a payload several times
smaller.  A JPEG slide's tiles keep its
own quantization tables and chroma sampling, as the lossless cut's tiles do: the model
sees the same kind of tile whichever way it was made, re-encoding with the tables the
pixels came from loses next to nothing, and a 4:2:0 slide is not re-encoded at 4:4:4
for chroma it never had (a third of the encoding time).  Other images get quality 95 at
4:4:4, the format of the camera photos the model was trained on.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, JpegImagePlugin

from gateway.backends.base import TileInput
from gateway.pipeline.images import DecodedImage
from gateway.pipeline.tiling import Tile

JPEG_QUALITY = 95
DEFAULT_JPEG = {"quality": JPEG_QUALITY, "subsampling": 0}
# Pillow's sampling codes the same along both axes (4:4:4, 4:2:0): still right for the
# pixels after an EXIF rotation, unlike 4:2:2 or 4:4:0.
_SYMMETRIC_SAMPLING = (0, 2)


def jpeg_settings(img: Image.Image) -> dict:
    """How tiles of ``img`` are encoded: the source JPEG's tables and sampling, if it is one."""
    tables = getattr(img, "quantization", None)
    if img.format != "JPEG" or img.mode != "RGB" or not tables:
        return DEFAULT_JPEG
    sampling = JpegImagePlugin.get_sampling(img)
    if sampling not in _SYMMETRIC_SAMPLING:
        return DEFAULT_JPEG
    return {"qtables": tables, "subsampling": sampling}


def encode_jpeg(img: Image.Image, settings: dict | None = None) -> bytes:
    """What a remote model gets when the submitted bytes won't do (``jpeg_settings``)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **(settings or DEFAULT_JPEG))
    return buf.getvalue()


def encode_region(img: Image.Image, tile: Tile, settings: dict | None = None) -> bytes:
    """The tile's pixels cropped from the image, as a fresh image: no profile carried."""
    region = img.crop((tile.x0, tile.y0, tile.x1, tile.y1))
    region.info = {}
    return encode_jpeg(region, settings)


def encoded_tiles(img: Image.Image, tiles: Sequence[Tile]) -> list[TileInput]:
    settings = jpeg_settings(img)
    return [
        TileInput(t.index, t.width, t.height, encoded=encode_region(img, t, settings))
        for t in tiles
    ]


def pixel_tiles(image: DecodedImage, tiles: Sequence[Tile]) -> list[TileInput]:
    """Views into the decoded slide, for an in-process backend: no copies."""
    return [
        TileInput(t.index, t.width, t.height, pixels=image.rgb[t.y0 : t.y1, t.x0 : t.x1])
        for t in tiles
    ]
