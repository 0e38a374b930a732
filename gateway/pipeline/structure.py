"""An image's structure counted from its bytes, before any decoder sees them.

What a decoder spends on an image is not bounded by its pixels alone.  A progressive JPEG
may repeat its scans: each one is a pass over every block of the image, and a file of a
few hundred kilobytes of 59-byte scans costs libjpeg minutes.  Empty metadata segments
(JPEG APPn and COM, PNG ancillary chunks, empty IDAT chunks, GIF extension blocks) cost
Pillow's header parser a microsecond or more each: millions of them fit in a body.  All
are counted here with a scan of the bytes that stops at the first count past its limit,
and refused (422 ``image_too_complex``) before Pillow or libjpeg reads the image.

The JPEG count follows the first picture only (up to its EOI), as the decoders do; a
scan's entropy-coded data is skipped with one regular-expression search for the next
marker (stuffed ``FF 00`` and restart markers are not markers there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.errors import ImageTooComplex

_JPEG = b"\xff\xd8\xff"
_PNG = b"\x89PNG\r\n\x1a\n"
# The next marker after a scan's data: FF followed by anything but a stuffed 00, a
# restart marker (D0-D7) or a fill byte.
_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_SOS, _EOI = 0xDA, 0xD9
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length


@dataclass(frozen=True)
class Structure:
    """Counts of one image; each stops one past the limit it was counted against."""

    scans: int = 0  # JPEG scans (SOS markers) of the first picture
    segments: int = 0  # JPEG marker segments other than scans; PNG chunks


def _jpeg(data: bytes, max_scans: int, max_segments: int) -> Structure:
    scans = segments = 0
    i, n = 2, len(data)
    while i + 4 <= n and scans <= max_scans and segments <= max_segments:
        if data[i] != 0xFF:
            break  # corrupt: the decoder says so
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == _EOI:
            break
        if marker in _STANDALONE:
            i += 2
            continue
        end = i + 2 + ((data[i + 2] << 8) | data[i + 3])
        if marker == _SOS:
            scans += 1
            found = _MARKER_AFTER_SCAN.search(data, end)
            if found is None:
                break
            i = found.start()
            continue
        segments += 1
        i = end
    return Structure(scans, segments)


def _png(data: bytes, max_segments: int) -> Structure:
    chunks = 0
    i, n = 8, len(data)
    while i + 8 <= n and chunks <= max_segments:
        chunks += 1
        if data[i + 4 : i + 8] == b"IEND":
            break
        i += 12 + int.from_bytes(data[i : i + 4], "big")
    return Structure(0, chunks)


def _gif(data: bytes, max_segments: int) -> Structure:
    """Extension blocks and their sub-blocks ahead of the first picture: Pillow reads each
    in Python (a million comment blocks cost it 0.7 s)."""
    if len(data) < 13:
        return Structure()
    i = 13
    if data[10] & 0x80:  # a global colour table
        i += 3 * (2 ** ((data[10] & 7) + 1))
    blocks, n = 0, len(data)
    while i < n and blocks <= max_segments and data[i] == 0x21:  # an extension
        blocks += 1
        i += 2
        while i < n and blocks <= max_segments:
            size = data[i]
            i += 1 + size
            if size == 0:
                break
            blocks += 1
    return Structure(0, blocks)


def count(data: bytes, max_scans: int, max_segments: int) -> Structure:
    """The image's scans and segments, counted up to one past each limit; zero for the
    formats not counted here."""
    if data.startswith(_JPEG):
        return _jpeg(data, max_scans, max_segments)
    if data.startswith(_PNG):
        return _png(data, max_segments)
    if data.startswith((b"GIF87a", b"GIF89a")):
        return _gif(data, max_segments)
    return Structure()


def check(data: bytes, max_scans: int, max_segments: int) -> Structure:
    """422 ``image_too_complex`` when the image has more scans or segments than allowed."""
    found = count(data, max_scans, max_segments)
    if found.scans > max_scans:
        raise ImageTooComplex(
            f"the JPEG has more than {max_scans:,} scans (limits.max_jpeg_scans); "
            "a progressive JPEG needs about ten"
        )
    if found.segments > max_segments:
        what = "chunks"
        if data.startswith(_JPEG):
            what = "marker segments"
        elif data.startswith(b"GIF"):
            what = "extension blocks"
        raise ImageTooComplex(
            f"the image has more than {max_segments:,} {what} (limits.max_image_segments)"
        )
    return found
