"""A whole image for a classifier: sent once, never tiled, at most ``max_side`` pixels wide.

A JPEG that is upright, RGB or grey and small enough goes to the model as submitted, no
second JPEG generation, once it is known to decode (at an eighth of its size, which reads
every coefficient): a truncated image is the caller's 422, not the model's refusal.
Anything else is decoded once (EXIF orientation applied, like a slide's tiles), shrunk
to ``max_side`` keeping its aspect ratio, and encoded as the tiles of a detector are
(:func:`gateway.pipeline.tiles.encode_jpeg`).
"""

from __future__ import annotations

from PIL import Image

from gateway.pipeline.images import ImageInfo, check_jpeg_decodes, decode_image
from gateway.pipeline.tiles import encode_jpeg


def scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """The size the model sees: the image's own, or shrunk so its longer side is max_side."""
    longest = max(width, height)
    if max_side is None or longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def whole_image(data: bytes, info: ImageInfo, max_side: int | None, max_pixels: int) -> bytes:
    """The bytes to send for an image whose header ``info`` has been read and checked."""
    size = scaled_size(info.width, info.height, max_side)
    as_is = info.format == "JPEG" and info.orientation == 1 and info.mode in ("RGB", "L")
    if as_is and size == (info.width, info.height):
        check_jpeg_decodes(data, max_pixels)  # a broken image is the caller's 422
        return data
    _, img = decode_image(data, max_pixels)
    if size != img.size:
        img = img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return encode_jpeg(img)
