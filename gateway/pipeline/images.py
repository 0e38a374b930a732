"""Turning submitted bytes into an RGB array, safely.

The pixel count is read from the image header and checked *before* decoding: a 1 MB PNG
can claim 50,000 x 50,000 pixels, and decoding it would allocate gigabytes.  Pillow's own
decompression-bomb guard is replaced by this explicit, configurable limit.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gateway.config import LIMITS_FIELDS
from gateway.errors import TooManyPixels, UndecodableImage, UnsupportedImage
from gateway.pipeline import structure

# MPO: the multi-picture JPEG some phones save (a JPEG followed by more pictures); it is
# read as its first picture, a JPEG like any other.
SUPPORTED_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "BMP", "GIF", "MPO")

Image.MAX_IMAGE_PIXELS = None  # our own limit below is checked from the header first

# Magic numbers of the formats above, to tell "not an image" (415) from "a broken one" (422).
_MAGIC = (
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF",
    b"BM",
    b"GIF87a",
    b"GIF89a",
)

_ORIENTATION_SWAPS_AXES = {5, 6, 7, 8}


@dataclass(frozen=True)
class ImageInfo:
    """What the header says; cheap to get, and enough to refuse an image early."""

    format: str
    width: int  # after EXIF orientation
    height: int
    orientation: int  # EXIF orientation tag, 1 when absent
    mode: str = "RGB"  # Pillow's mode of the stored pixels (a CMYK JPEG says "CMYK")


@dataclass(frozen=True)
class DecodedImage:
    info: ImageInfo
    rgb: np.ndarray  # H x W x 3 uint8, EXIF orientation applied

    @property
    def width(self) -> int:
        return self.info.width

    @property
    def height(self) -> int:
        return self.info.height


def looks_like_image(data: bytes) -> bool:
    return data.startswith(_MAGIC)


def _open(data: bytes) -> Image.Image:
    if not data:
        raise UnsupportedImage("the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        if looks_like_image(data):
            raise UndecodableImage("the image is corrupt and cannot be decoded") from exc
        raise UnsupportedImage(
            "not a supported image; send JPEG, PNG, TIFF, WebP, BMP or GIF"
        ) from exc
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as exc:
        raise UndecodableImage("the image is corrupt and cannot be decoded") from exc
    if img.format not in SUPPORTED_FORMATS:
        raise UnsupportedImage(
            f"{img.format or 'this'} images are not supported; "
            "send JPEG, PNG, TIFF, WebP, BMP or GIF"
        )
    return img


def _orientation(img: Image.Image, header_only: bool) -> int:
    """The EXIF orientation, from the header alone or from the decoded image.

    ``PngImageFile.getexif`` decodes the whole image to look for an eXIf chunk after the
    pixels, which made every PNG header check cost a full decode.  Header checks read the
    chunks ahead of the pixels only; ``decode_image`` reads the orientation again once the
    pixels are loaded, so a trailing eXIf chunk still counts.
    """
    try:
        if header_only and img.format == "PNG":
            exif = Image.Image.getexif(img)  # the chunks read so far, without decoding
        else:
            exif = img.getexif()
        value = exif.get(0x0112, 1)
    except Exception:  # a broken EXIF block must not fail an otherwise good image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _check_pixels(img: Image.Image, max_pixels: int) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise UndecodableImage("the image has no pixels")
    if w * h > max_pixels:
        raise TooManyPixels(
            f"the image has {w}x{h} = {w * h:,} pixels; the limit is {max_pixels:,}"
        )


def _oriented_info(img: Image.Image, orientation: int) -> ImageInfo:
    w, h = img.size
    if orientation in _ORIENTATION_SWAPS_AXES:
        w, h = h, w
    return ImageInfo(
        format=str(img.format), width=w, height=h, orientation=orientation, mode=str(img.mode)
    )


def probe(
    data: bytes,
    max_pixels: int,
    *,
    max_scans: int = LIMITS_FIELDS.default("max_jpeg_scans"),
    max_segments: int = LIMITS_FIELDS.default("max_image_segments"),
) -> ImageInfo:
    """Format and oriented size from the header only; raises 413/415/422 errors.

    The scans and segments are counted first (:mod:`gateway.pipeline.structure`): Pillow's
    header parser walks every segment in Python, and every later step (the lossless cut,
    the decode) walks every scan.
    """
    structure.check(data, max_scans, max_segments)
    img = _open(data)
    _check_pixels(img, max_pixels)
    return _oriented_info(img, _orientation(img, header_only=True))


def _to_rgb(img: Image.Image) -> Image.Image:
    """Grayscale, palette, RGBA, CMYK and 16-bit images become 8-bit RGB."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") else max(float(arr.max(initial=0)), 1.0)
        g = np.clip(arr * (255.0 / hi), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(g[:, :, None], 3, axis=2), "RGB")
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=0))
        g = ((arr - lo) * (255.0 / (hi - lo)) if hi > lo else arr * 0).astype(np.uint8)
        return Image.fromarray(np.repeat(g[:, :, None], 3, axis=2), "RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, KeyError)


def decode_image(data: bytes, max_pixels: int) -> tuple[ImageInfo, Image.Image]:
    """Decode once into an RGB Pillow image, EXIF orientation applied; first frame only.

    Tiles for a remote model are cropped and encoded from this image directly: turning it
    into an array as well would hold the slide's pixels twice.
    """
    img = _open(data)
    _check_pixels(img, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.seek(0)
            img.load()
            info = _oriented_info(img, _orientation(img, header_only=False))
            if info.orientation != 1:
                img = ImageOps.exif_transpose(img)
            img = _to_rgb(img)
    except MemoryError as exc:
        raise TooManyPixels("the image is too large to decode") from exc
    except _DECODE_ERRORS as exc:
        raise UndecodableImage("the image is truncated or corrupt and cannot be decoded") from exc
    if img.mode != "RGB":
        raise UndecodableImage("the image could not be converted to RGB")
    if img.size != (info.width, info.height):
        info = ImageInfo(info.format, img.width, img.height, info.orientation, info.mode)
    return info, img


def check_jpeg_decodes(data: bytes, max_pixels: int) -> None:
    """Raise 422 when a JPEG sent on as submitted would not decode (truncated, corrupt).

    libjpeg decodes at an eighth of the size here: every coefficient is still read, so a
    missing or broken scan is found, for a fraction of a full decode's work and memory.
    """
    img = _open(data)
    _check_pixels(img, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.draft(img.mode, ((img.width + 7) // 8, (img.height + 7) // 8))
            img.load()
    except MemoryError as exc:
        raise TooManyPixels("the image is too large to decode") from exc
    except _DECODE_ERRORS as exc:
        raise UndecodableImage("the image is truncated or corrupt and cannot be decoded") from exc


def decode(data: bytes, max_pixels: int) -> DecodedImage:
    """Decode once into RGB, EXIF orientation applied; first frame of animations/pages."""
    info, img = decode_image(data, max_pixels)
    try:
        rgb = np.asarray(img)
    except MemoryError as exc:
        raise TooManyPixels("the image is too large to decode") from exc
    except _DECODE_ERRORS as exc:
        raise UndecodableImage("the image is truncated or corrupt and cannot be decoded") from exc
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise UndecodableImage("the image could not be converted to RGB")
    return DecodedImage(info=info, rgb=rgb)
