"""Image intake: formats, conversions, EXIF orientation, and limits checked before decoding."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from helpers import encode, png_chunk
from PIL import Image

from gateway.errors import TooManyPixels, UndecodableImage, UnsupportedImage
from gateway.pipeline.images import decode, probe

LIMIT = 40_000_000


def rgb_image(w=64, h=48) -> Image.Image:
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2] = (200, 40, 40)
    arr[:, w // 2 :] = (40, 40, 200)
    return Image.fromarray(arr)


@pytest.mark.parametrize(
    "mode,fmt",
    [
        ("RGB", "JPEG"),
        ("RGB", "PNG"),
        ("RGB", "TIFF"),
        ("RGB", "WEBP"),
        ("L", "PNG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("CMYK", "JPEG"),
        ("I;16", "PNG"),
        ("1", "PNG"),
        ("RGB", "BMP"),
        ("P", "GIF"),
    ],
)
def test_formats_and_modes_become_rgb(mode, fmt):
    img = rgb_image().convert(mode) if mode != "I;16" else Image.new("I;16", (64, 48), 30000)
    out = decode(encode(img, fmt), LIMIT)
    assert out.rgb.shape == (48, 64, 3) and out.rgb.dtype == np.uint8
    assert out.info.format == fmt


def test_sixteen_bit_is_scaled_not_clipped():
    img = Image.new("I;16", (8, 8), 65535)
    assert decode(encode(img, "PNG"), LIMIT).rgb.max() == 255


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation):
    img = rgb_image(64, 48)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(img, "JPEG", exif=exif.tobytes(), quality=95)
    info = probe(data, LIMIT)
    out = decode(data, LIMIT)
    swapped = orientation in (5, 6, 7, 8)
    assert (info.width, info.height) == ((48, 64) if swapped else (64, 48))
    assert out.rgb.shape[:2] == (info.height, info.width)


def png_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    head = png_chunk(b"IHDR", ihdr)
    return b"\x89PNG\r\n\x1a\n" + head + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def test_too_many_pixels_is_refused_from_the_header_without_allocating():
    data = png_claiming(50_000, 50_000)
    tracemalloc.start()
    with pytest.raises(TooManyPixels) as info:
        decode(data, LIMIT)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert info.value.status == 413
    assert peak < 5_000_000  # 50k x 50k RGB would be 7.5 GB


@pytest.mark.parametrize(
    "data,error",
    [
        (b"", UnsupportedImage),
        (b"hello world, not an image", UnsupportedImage),
        (b"%PDF-1.4 not an image", UnsupportedImage),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, UndecodableImage),
    ],
)
def test_not_images_and_broken_images(data, error):
    with pytest.raises(error):
        decode(data, LIMIT)


def test_truncated_jpeg_is_422():
    arr = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    data = encode(Image.fromarray(arr), "JPEG", quality=90)
    with pytest.raises(UndecodableImage) as info:
        decode(data[: len(data) // 2], LIMIT)
    assert info.value.status == 422


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (20, 10), c) for c in [(255, 0, 0), (0, 255, 0)]]
    out = decode(encode(frames[0], "GIF", save_all=True, append_images=frames[1:]), LIMIT)
    assert out.rgb.shape == (10, 20, 3)
    assert out.rgb[0, 0, 0] > 200 and out.rgb[0, 0, 1] < 50


def _exif_tiff(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()[len(b"Exif\x00\x00") :]  # an eXIf chunk holds the TIFF block only


def _png_with_exif_after_pixels(img: Image.Image, orientation: int) -> bytes:
    data = encode(img, "PNG")
    iend = data.rindex(b"IEND") - 4  # the length field before the chunk type
    return data[:iend] + png_chunk(b"eXIf", _exif_tiff(orientation)) + data[iend:]


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_png_exif_orientation_is_applied(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(rgb_image(64, 48), "PNG", exif=exif.tobytes())
    info = probe(data, LIMIT)
    out = decode(data, LIMIT)
    swapped = orientation in (5, 6, 7, 8)
    assert (info.width, info.height) == ((48, 64) if swapped else (64, 48))
    assert out.info == info
    assert out.rgb.shape[:2] == (info.height, info.width)


@pytest.mark.parametrize("orientation", [3, 6])
def test_png_exif_after_the_pixels_is_applied_when_decoding(orientation):
    """The header check does not decode to find a trailing eXIf chunk; the decode does."""
    img = rgb_image(64, 48)
    data = _png_with_exif_after_pixels(img, orientation)
    assert Image.open(io.BytesIO(data)).getexif().get(0x0112) == orientation  # Pillow agrees
    assert probe(data, LIMIT).orientation == 1
    out = decode(data, LIMIT)
    expected = np.asarray(
        img.transpose(
            Image.Transpose.ROTATE_180 if orientation == 3 else Image.Transpose.ROTATE_270
        )
    )
    assert out.info.orientation == orientation
    assert np.array_equal(out.rgb, expected)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "WEBP", "GIF", "BMP"])
def test_header_checks_do_not_decode_pixels(fmt, monkeypatch):
    """A header check is cheap for every format: a PNG's used to decode the whole image."""
    from PIL import ImageFile

    loads = []
    real_load = ImageFile.ImageFile.load

    def counting_load(self):
        loads.append(self.format)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    img = rgb_image(64, 48) if fmt != "GIF" else rgb_image(64, 48).convert("P")
    data = encode(img, fmt)
    assert probe(data, LIMIT).width == 64
    assert loads == []
    decode(data, LIMIT)
    assert loads  # the spy sees real decodes
