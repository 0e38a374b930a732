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


def encode_tile(pixels, lossless: bool) -> bytes:
    img = Image.fromarray(pixels, "RGB")
    buf = io.BytesIO()
    if lossless:
        img.save(buf, format="PNG", compress_level=1)
    else:
        img.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


def tile_inputs(image: DecodedImage, tiles: Sequence[Tile], encoded: bool) -> list[TileInput]:
    out = []
    lossless = image.info.format in ("PNG", "TIFF", "BMP", "GIF")
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
