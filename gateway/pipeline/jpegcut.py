"""Lossless JPEG tiles: cut a JPEG into tiles in one pass without decoding its pixels.

libjpeg-turbo's transform reads the slide's DCT coefficients once and writes each tile's
blocks unchanged (``jpegtran -crop``), so cutting costs a fraction of a decode plus an
encode, and the model sees the submitted pixels, without a second generation of JPEG
loss.  It applies only where the result is certain to match the decoded slide: baseline
Huffman YCbCr JPEGs whose MCU divides the 16-px tile grid, with no EXIF rotation.
Anything else, or a library that is missing or fails, returns ``None`` and the caller
takes the plain path (decode, crop, encode), which also decides whether a broken image is
a 422.

The TurboJPEG C API is called through ctypes (the calls release the GIL).  The library
comes from the system (``libturbojpeg.so.0``, Debian: ``libturbojpeg0``) when it is there,
as the distribution keeps it patched, and otherwise from the ``turbojpeg`` wheel pinned in
``requirements.txt`` (x86_64), which bundles its own copy: a Cloud Functions build installs
that file and nothing else.  Both give the same bytes.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from pathlib import Path

from gateway import logs

# TurboJPEG constants (turbojpeg.h, stable since 1.2).
_TJXOP_NONE = 0
_TJXOPT_PERFECT = 1
_TJXOPT_CROP = 4
_TJXOPT_COPYNONE = 64
_TJFLAG_STOPONWARNING = 8192
_TJCS_YCbCr = 1
# MCU size per chroma subsampling (TJSAMP_444, 422, 420, GRAY, 440, 411).
_MCU = {0: (8, 8), 1: (16, 8), 2: (16, 16), 4: (8, 16)}

GRID = 16  # tile origins are multiples of this (see gateway.pipeline.tiling)


class _Region(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int)]


class _Transform(ctypes.Structure):
    _fields_ = [
        ("r", _Region),
        ("op", ctypes.c_int),
        ("options", ctypes.c_int),
        ("data", ctypes.c_void_p),
        ("customFilter", ctypes.c_void_p),
    ]


_lib: ctypes.CDLL | None = None
_lib_tried = False
_source: str | None = None
_lib_lock = threading.Lock()
_local = threading.local()

SYSTEM_LIBRARY = "libturbojpeg.so.0"


def _wheel_library() -> str | None:
    """The libturbojpeg that the ``turbojpeg`` wheel bundles, found without importing it."""
    from importlib.util import find_spec

    try:
        spec = find_spec("turbojpeg")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    libs = Path(spec.origin).parent / "turbojpeg.libs"
    found = sorted(libs.glob("libturbojpeg*.so*")) if libs.is_dir() else []
    return str(found[0]) if found else None


def candidates() -> list[tuple[str, str]]:
    """``(source, path)`` of each library to try, preferred first."""
    found = [(f"system {SYSTEM_LIBRARY}", SYSTEM_LIBRARY)]
    wheel = _wheel_library()
    if wheel:
        found.append((f"turbojpeg wheel ({Path(wheel).name})", wheel))
    return found


def open_library(path: str) -> ctypes.CDLL | None:
    """The TurboJPEG library at ``path`` with the calls used here declared; ``None`` if unusable."""
    try:
        lib = ctypes.CDLL(path)
        lib.tjInitTransform.restype = ctypes.c_void_p
        lib.tjInitTransform.argtypes = []
        lib.tjDecompressHeader3.restype = ctypes.c_int
        lib.tjDecompressHeader3.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.POINTER(ctypes.c_int),
            ctypes.POINTER(ctypes.c_int),
            ctypes.POINTER(ctypes.c_int),
            ctypes.POINTER(ctypes.c_int),
        ]
        lib.tjTransform.restype = ctypes.c_int
        lib.tjTransform.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.POINTER(ctypes.c_ulong),
            ctypes.POINTER(_Transform),
            ctypes.c_int,
        ]
        lib.tjFree.restype = None
        lib.tjFree.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    return lib


def _load() -> ctypes.CDLL | None:
    """The library, loaded at first use; ``None`` (for good) when none is usable.

    The first call logs which image path this process takes, once, so an operator can
    see from the logs whether tiles are cut losslessly or decoded and re-encoded.
    """
    global _lib, _lib_tried, _source
    if _lib_tried:
        return _lib
    with _lib_lock:
        if _lib_tried:
            return _lib
        lib, source = None, None
        for name, path in candidates():
            lib = open_library(path)
            if lib is not None:
                source = name
                break
        _lib, _source, _lib_tried = lib, source, True
    logs.emit("INFO", f"image path: {image_path()}", image_path=image_path())
    return lib


def available() -> bool:
    return _load() is not None


def image_path() -> str:
    """How this process turns a JPEG slide into tiles, for the logs and ``/readyz``."""
    _load()
    if _source is None:
        return "decode and re-encode (no libturbojpeg found)"
    return f"lossless JPEG cut: {_source}"


def _handle(lib: ctypes.CDLL) -> int | None:
    """One TurboJPEG handle per thread and library: handles are not thread-safe, and cheap
    to keep."""
    handles = getattr(_local, "handles", None)
    if handles is None:
        handles = _local.handles = {}
    h = handles.get(lib)
    if h is None:
        h = handles[lib] = lib.tjInitTransform()
    return h or None


def _baseline_frame(data: bytes) -> bool:
    """True when the first frame header is baseline or extended sequential Huffman, 8-bit.

    Progressive and arithmetic-coded JPEGs take the plain path: their tiles would be
    correct, but the rules for them are not worth the risk.
    """
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        if marker in (0xC0, 0xC1):
            return i + 4 < n and data[i + 4] == 8
        if 0xC2 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return False  # progressive, lossless or arithmetic
        if marker in (0xD9, 0xDA):  # end of image or start of scan before a frame
            return False
        i += 2 + length
    return False


# Bytes a pixel of DCT coefficients hold while a cut runs (2 per coefficient, per component
# at its sampling): TJSAMP_444, 422, 420, GRAY, 440, 411.
_COEFFICIENT_BYTES = {0: 6.0, 1: 4.0, 2: 3.0, 3: 2.0, 4: 4.0, 5: 3.0}


def coefficient_bytes_per_pixel(data: bytes) -> float | None:
    """What a cut of this JPEG holds in memory per pixel, from its header; ``None`` if unknown."""
    lib = _load()
    if lib is None:
        return None
    handle = _handle(lib)
    if handle is None:
        return None
    w, h, samp, cs = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    if lib.tjDecompressHeader3(
        handle,
        data,
        len(data),
        ctypes.byref(w),
        ctypes.byref(h),
        ctypes.byref(samp),
        ctypes.byref(cs),
    ):
        return None
    return _COEFFICIENT_BYTES.get(samp.value)


def cut(data: bytes, boxes: Sequence[tuple[int, int, int, int]]) -> list[bytes] | None:
    """Tiles ``(x0, y0, x1, y1)`` of the JPEG ``data`` as JPEGs, or ``None`` to decode instead.

    ``data`` must already have passed the header checks (format JPEG, pixel limit, EXIF
    orientation 1).  Any warning from libjpeg (corrupt or truncated data) is an error here.
    """
    lib = _load()
    if lib is None or not boxes or not _baseline_frame(data):
        return None
    handle = _handle(lib)
    if handle is None:
        return None
    w, h, samp, cs = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    size = len(data)
    if lib.tjDecompressHeader3(
        handle, data, size, ctypes.byref(w), ctypes.byref(h), ctypes.byref(samp), ctypes.byref(cs)
    ):
        return None
    mcu = _MCU.get(samp.value)
    if mcu is None or cs.value != _TJCS_YCbCr or GRID % mcu[0] or GRID % mcu[1]:
        return None
    n = len(boxes)
    transforms = (_Transform * n)()
    for t, (x0, y0, x1, y1) in zip(transforms, boxes, strict=True):
        if x0 % mcu[0] or y0 % mcu[1] or x0 < 0 or y0 < 0 or x1 > w.value or y1 > h.value:
            return None
        if x1 <= x0 or y1 <= y0:
            return None
        t.r.x, t.r.y, t.r.w, t.r.h = x0, y0, x1 - x0, y1 - y0
        t.op = _TJXOP_NONE
        t.options = _TJXOPT_CROP | _TJXOPT_PERFECT | _TJXOPT_COPYNONE
    bufs = (ctypes.c_void_p * n)()
    sizes = (ctypes.c_ulong * n)()
    try:
        rc = lib.tjTransform(handle, data, size, n, bufs, sizes, transforms, _TJFLAG_STOPONWARNING)
        if rc != 0:
            return None
        return [ctypes.string_at(bufs[i], sizes[i]) for i in range(n)]
    finally:
        for i in range(n):
            if bufs[i]:
                lib.tjFree(bufs[i])
