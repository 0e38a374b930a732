"""A corpus of hostile and unusual images, generated on the fly, each with the statuses the
gateway may answer for it (200 or its pinned 4xx, never a 5xx)."""

from __future__ import annotations

import io
import random
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from helpers import encode, png_chunk
from PIL import Image
from synthetic import make_slide, random_cells

OK = frozenset({200})
CORRUPT = frozenset({422})
NOT_IMAGE = frozenset({415})
TOO_MANY_PIXELS = frozenset({413})
# A flipped bit may land in pixel data (still decodes), in a marker (cannot decode), in the
# magic number (not an image any more) or in a dimension (too many pixels).
BIT_FLIPPED = frozenset({200, 413, 415, 422})


@dataclass(frozen=True)
class BadImage:
    name: str
    data: bytes
    expect: frozenset[int]  # as a raw body to :detect
    expect_json: frozenset[int] | None = None  # base64 in JSON to :predict, when different


def _insert_png_chunk(png: bytes, chunk: bytes) -> bytes:
    """Right after IHDR (8-byte signature + 25-byte IHDR chunk), where ancillary chunks go."""
    return png[:33] + chunk + png[33:]


def _claim_size(jpeg: bytes, width: int, height: int) -> bytes:
    """Rewrite the SOF marker's dimensions without touching the (small) pixel data."""
    data = bytearray(jpeg)
    i = 2
    while i < len(data) - 9:
        if data[i] != 0xFF:
            raise ValueError("not a marker")
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise ValueError("no SOF marker")


def slide_jpeg(width: int = 640, height: int = 480, cells: int = 6, seed: int = 3) -> bytes:
    return encode(
        make_slide(width, height, random_cells(width, height, cells, seed=seed), seed=seed), "JPEG"
    )


def corpus(max_pixels: int) -> list[BadImage]:
    rng = random.Random(1234)
    base = slide_jpeg()
    rgb = np.asarray(Image.open(io.BytesIO(base)).convert("RGB"))
    items: list[BadImage] = []

    for k in range(1, 8):
        cut = len(base) * k // 8
        items.append(BadImage(f"jpeg-truncated-{k}of8", base[:cut], CORRUPT))
    for n in range(12):
        data = bytearray(base)
        for _ in range(1 + n * 4):
            pos = rng.randrange(len(data))
            data[pos] ^= 1 << rng.randrange(8)
        items.append(BadImage(f"jpeg-bitflips-{n}", bytes(data), BIT_FLIPPED))
    items += [
        BadImage("wrong-magic-jpeg", b"\x00\x00\x00" + base[3:], NOT_IMAGE),
        BadImage("wrong-magic-text", b"hello, this is not an image" * 50, NOT_IMAGE),
        BadImage("html", b"<html><body>slide</body></html>", NOT_IMAGE),
        BadImage("jpeg-magic-only", b"\xff\xd8\xff", CORRUPT),
        BadImage("png-magic-then-junk", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, CORRUPT),
        # An empty body is a malformed request; an empty base64 string is an empty image.
        BadImage("zero-bytes", b"", frozenset({400}), NOT_IMAGE),
        BadImage("one-zero-byte", b"\x00", NOT_IMAGE),
    ]
    pixel = np.full((1, 1, 3), 200, np.uint8)
    items += [
        BadImage("1x1-jpeg", encode(pixel, "JPEG"), OK),
        BadImage("1x1-png", encode(pixel, "PNG"), OK),
        BadImage("65535x1-png", encode(np.full((1, 65535, 3), 220, np.uint8), "PNG"), OK),
        BadImage("1x65535-png", encode(np.full((65535, 1, 3), 220, np.uint8), "PNG"), OK),
        BadImage("65500x1-jpeg", encode(np.full((1, 65500, 3), 220, np.uint8), "JPEG"), OK),
    ]
    items.append(BadImage("cmyk-jpeg", encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"), OK))
    gray16 = (rgb[:, :, 0].astype(np.uint16) * 257).astype(np.uint16)
    items.append(BadImage("png-16bit-gray", encode(Image.fromarray(gray16), "PNG"), OK))
    items.append(
        BadImage(
            "png-palette",
            encode(Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
            OK,
        )
    )
    items.append(BadImage("png-palette-transparent", encode(_transparent_palette(rgb), "PNG"), OK))
    items.append(BadImage("png-rgba", encode(Image.fromarray(rgb).convert("RGBA"), "PNG"), OK))
    items.append(BadImage("png-la", encode(Image.fromarray(rgb).convert("LA"), "PNG"), OK))
    frames = [Image.fromarray(np.roll(rgb, 37 * i, axis=1)) for i in range(4)]
    items.append(BadImage("gif-animated", _animated(frames, "GIF"), OK))
    items.append(BadImage("png-animated", _animated(frames, "PNG"), OK))
    items.append(BadImage("tiff-multipage", _animated(frames, "TIFF"), OK))
    items.append(BadImage("webp", encode(rgb, "WEBP"), OK))
    items.append(BadImage("bmp", encode(rgb, "BMP"), OK))

    small_png = encode(rgb[:64, :64], "PNG")
    bomb = zlib.compress(b"\x00" * (64 * 1024 * 1024), 9)  # 64 MiB of text in ~64 KiB
    ztxt = png_chunk(b"zTXt", b"Comment\x00\x00" + bomb)
    items.append(BadImage("png-ztxt-bomb", _insert_png_chunk(small_png, ztxt), CORRUPT))
    iccp = png_chunk(b"iCCP", b"icc\x00\x00" + bomb)
    items.append(BadImage("png-iccp-bomb", _insert_png_chunk(small_png, iccp), CORRUPT))
    big_text = png_chunk(
        b"tEXt", b"Comment\x00" + bytes(rng.getrandbits(7) | 32 for _ in range(3_000_000))
    )
    items.append(BadImage("png-text-3mb", _insert_png_chunk(small_png, big_text), OK))

    side = int(max_pixels**0.5) + 64
    items.append(
        BadImage("jpeg-claims-too-many-pixels", _claim_size(base, side, side), TOO_MANY_PIXELS)
    )
    items.append(
        BadImage("jpeg-claims-65500x65500", _claim_size(base, 65500, 65500), TOO_MANY_PIXELS)
    )
    items.append(
        BadImage("png-claims-too-many-pixels", _png_claim(small_png, side, side), TOO_MANY_PIXELS)
    )
    return items


def _transparent_palette(rgb: np.ndarray) -> Image.Image:
    img = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    img.info["transparency"] = 0
    return img


def _animated(frames: list[Image.Image], fmt: str) -> bytes:
    extra = {"duration": 100, "loop": 0} if fmt in ("GIF", "PNG") else {}
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], **extra)


def _png_claim(png: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR claims another size (CRC fixed, so only the size check can refuse it)."""
    ihdr = bytearray(png[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    return png[:8] + png_chunk(b"IHDR", bytes(ihdr)) + png[33:]
