"""What every kind does before a model is called: each image's header read and checked
once, the caller's quota, and errors that name the instance they are about."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from gateway.backends.base import Backend
from gateway.config import Limits
from gateway.context import Facts
from gateway.errors import (
    BackendUnavailable,
    GatewayError,
    PayloadTooLarge,
    UndecodableImage,
    UnsupportedImage,
)
from gateway.pipeline import decode_budget, image_faults
from gateway.pipeline.images import ImageInfo, probe

# The caller's quota for this request, bound by the request's bookkeeping: takes the
# number of images, raises QuotaExceeded.
Quota = Callable[[int], None]


def no_quota(images: int) -> None:
    """For callers that charge nobody (the command line counting slides in-process)."""


@contextmanager
def reporting(facts: Facts) -> Iterator[Facts]:
    """Facts learnt before a failure travel with its error to the usage record."""
    try:
        yield facts
    except GatewayError as exc:
        if exc.facts is None:
            exc.facts = facts
        raise


def _faults_before_outage(
    images: Sequence[bytes],
    infos: Sequence[ImageInfo],
    limits: Limits,
    backend: Backend,
    deadline: float,
) -> None:
    """A quick 503 while the model server is known to be down, but an image's own fault
    first: each image is decoded once (the request ends here either way) so a truncated
    one gets its 422, not a 503 it would retry for ever."""
    try:
        backend.ensure_reachable(deadline)
    except BackendUnavailable:
        for i, (data, info) in enumerate(zip(images, infos, strict=True)):
            try:
                image_faults.check_decodable(limits, data, info)
            except (PayloadTooLarge, UnsupportedImage, UndecodableImage) as exc:
                raise for_instance(exc, i, len(images)) from exc
        raise


def for_instance(exc: GatewayError, index: int, count: int) -> GatewayError:
    """The same error, naming the instance when a request carries several images."""
    if count == 1:
        return exc
    return GatewayError(
        f"instance {index}: {exc.message}", status=exc.status, code=exc.code, headers=exc.headers
    )


def _check_images(
    facts: Facts, images: Sequence[bytes], limits: Limits, quota: Quota, copies: int = 1
) -> list[ImageInfo]:
    """Header checks of every image (format, pixels, decoded size) before any model work,
    then the quota."""
    infos = []
    for i, data in enumerate(images):
        described = {"bytes": len(data), "width": None, "height": None, "format": None}
        if i == 0:  # the first image is the one usage records describe, refused or not
            facts.image = described
        try:
            info = probe(
                data,
                limits.max_pixels,
                max_scans=limits.max_jpeg_scans,
                max_segments=limits.max_image_segments,
            )
            decode_budget.check(limits, info, copies)
        except GatewayError as exc:
            raise for_instance(exc, i, len(images)) from exc
        described.update(width=info.width, height=info.height, format=info.format)
        infos.append(info)
    quota(len(images))
    return infos


def admit_images(
    facts: Facts,
    images: Sequence[bytes],
    limits: Limits,
    quota: Quota,
    backend: Backend,
    timeout_s: float,
    copies: int = 1,
) -> tuple[list[ImageInfo], float]:
    """Every kind's first steps: each image's header checked once, the quota, the
    request's one deadline, and a quick 503 (after an image's own fault) while the model
    server is known to be down.  Returns the images' infos and the deadline.  ``copies``
    is what the request will hold of an image at once (2 for a rendered answer), checked
    against ``limits.max_decoded_mb`` before the model is called."""
    deadline = time.monotonic() + timeout_s  # header checks, decodes and cuts count too
    infos = _check_images(facts, images, limits, quota, copies)
    _faults_before_outage(images, infos, limits, backend, deadline)
    return infos, deadline
