"""Memory for decoding, bounded per image and per process.

A PNG of zeros of a hundred kilobytes can claim 6300 x 6300 pixels: under the pixel limit,
yet decoded it takes 4 bytes a pixel, about 160 MB, and a few at once go past the memory
the gateway was deployed with.  The size an image takes once decoded is known from its header, so:

* each image's decoded size is checked against ``limits.max_decoded_mb`` before any
  pixel is decoded (413 ``too_large_decoded``);
* a process decodes at most ``limits.decode_budget_mb`` of images at once.  A request
  whose image does not fit waits up to ``limits.decode_wait_s`` for others to finish,
  then is answered 503 ``overloaded`` with ``Retry-After``: the process never takes more
  memory than it was sized for.

The decoded size counts the 8-bit RGB copy the pipeline works on (4 bytes a pixel,
Pillow pads RGB), plus, for other modes, Pillow's copy of the pixels as stored (1 to 4
bytes a pixel) and the float copy that 16-bit and float images are scaled through.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from gateway.config import Limits
from gateway.errors import GatewayError, PayloadTooLarge
from gateway.pipeline.images import ImageInfo

MB = 1024 * 1024
RETRY_AFTER_S = 2
RGB_BYTES = 4  # Pillow stores RGB as 4 bytes a pixel
# A rendered answer: the decoded slide, drawn on in place, then its JPEG and the copy of
# it the answer takes (counted as a second RGB copy: a JPEG of noise at the answer's
# quality is under 2 bytes a pixel).
RENDER_COPIES = 2

# Bytes a pixel of the decoded file, by Pillow mode; anything else counts as 4.
_MODE_BYTES = {
    "1": 1,
    "L": 1,
    "P": 1,
    "LA": 2,
    "PA": 2,
    "La": 2,
    "I;16": 2,
    "I;16B": 2,
    "I;16L": 2,
    "I;16N": 2,
    "I": 4,
    "F": 4,
    "RGB": 4,
    "RGBA": 4,
    "CMYK": 4,
}
# Modes scaled through a float64 array on the way to RGB (gateway.pipeline.images._to_rgb).
_FLOAT_SCALED = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}


class DecodedTooLarge(PayloadTooLarge):
    code = "too_large_decoded"


class Overloaded(GatewayError):
    status, code = 503, "overloaded"


def decoded_bytes(width: int, height: int, mode: str, copies: int = 1) -> int:
    """Memory one decode of the image takes at its peak; ``copies`` more RGB copies for
    callers that hold the pixels twice (a rendered answer)."""
    per_pixel = RGB_BYTES * copies
    if mode != "RGB":  # the file's own mode, converted to RGB
        per_pixel += _MODE_BYTES.get(mode, 4)
    if mode in _FLOAT_SCALED:
        per_pixel += 8
    return width * height * per_pixel


class DecodeBudget:
    """Bytes of decoding in progress in this process, and a wait for room."""

    def __init__(self, budget_bytes: int, wait_s: float) -> None:
        self.budget_bytes = budget_bytes
        self.wait_s = wait_s
        self.in_use = 0
        self.peak = 0  # the most ever reserved at once, for tests and benchmarks
        self._cond = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int, until: float | None = None) -> Iterator[None]:
        """Room for ``nbytes``, waited for up to ``wait_s`` (and never past ``until``, the
        request's deadline)."""
        nbytes = min(nbytes, self.budget_bytes)  # one image alone always gets its turn
        deadline = time.monotonic() + self.wait_s
        if until is not None:
            deadline = min(deadline, until)
        with self._cond:
            while self.in_use + nbytes > self.budget_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Overloaded(
                        "the gateway is decoding as many images as its memory allows; "
                        f"retry in {RETRY_AFTER_S} s",
                        headers={"Retry-After": str(RETRY_AFTER_S)},
                    )
                self._cond.wait(left)
            self.in_use += nbytes
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= nbytes
                self._cond.notify_all()


_lock = threading.Lock()
_budgets: dict[tuple[int, float], DecodeBudget] = {}


def settings(limits: Limits) -> tuple[int, int, float]:
    """(max decoded bytes of one image, the process's budget in bytes, wait in seconds)."""
    return (
        int(limits.max_decoded_mb * MB),
        int(limits.decode_budget_mb * MB),
        limits.decode_wait_s,
    )


def budget_for(limits: Limits) -> DecodeBudget:
    """The process's budget (one per configured size, so a reload with new limits gets
    its own)."""
    _, budget, wait = settings(limits)
    with _lock:
        found = _budgets.get((budget, wait))
        if found is None:
            found = _budgets[(budget, wait)] = DecodeBudget(budget, wait)
        return found


def check(limits: Limits, info: ImageInfo, copies: int = 1) -> None:
    """413 before decoding when the image alone would take more than allowed (``copies``
    as :func:`decoded_bytes`: a rendered answer counts its own)."""
    max_bytes, _, _ = settings(limits)
    need = decoded_bytes(info.width, info.height, info.mode, copies)
    if need > max_bytes:
        raise DecodedTooLarge(
            f"the image takes {need / MB:,.0f} MB once decoded "
            f"({info.width}x{info.height}, {info.mode}); the limit is {max_bytes / MB:,.0f} MB"
        )


@contextmanager
def decoding(
    limits: Limits, info: ImageInfo, copies: int = 1, until: float | None = None
) -> Iterator[None]:
    """Hold the image's decoded size in the process's budget while it is worked on; the
    wait for room ends at the request's deadline ``until`` at the latest."""
    need = decoded_bytes(info.width, info.height, info.mode, copies)
    with budget_for(limits).reserve(need, until):
        yield
