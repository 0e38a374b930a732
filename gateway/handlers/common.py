"""Steps shared by the detection routes: admission, body reading, running slides."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from gateway.context import RequestContext
from gateway.errors import (
    BackendUnavailable,
    BadRequest,
    GatewayError,
    PayloadTooLarge,
    UndecodableImage,
    UnsupportedImage,
)
from gateway.pipeline import decode_budget, image_faults
from gateway.pipeline import merge as merging
from gateway.pipeline.images import ImageInfo, probe
from gateway.pipeline.slide import SlideResult, detect_slide_bytes
from gateway.registry import Service
from gateway.runtime import Gateway


def _for_instance(exc: GatewayError, index: int, count: int) -> GatewayError:
    """The same error, naming the instance when a request carries several images."""
    if count == 1:
        return exc
    return GatewayError(
        f"instance {index}: {exc.message}", status=exc.status, code=exc.code, headers=exc.headers
    )


def admit(gw: Gateway, request: Any, ctx: RequestContext, service: str) -> Service:
    """Who is calling and may they use this service; then usage recording starts."""
    ctx.service = service
    gw.auth.authenticate(request, ctx)
    svc = gw.services.get(service)
    gw.auth.authorize(ctx, svc.config)
    gw.usage.begin(ctx)
    return svc


def read_body(request: Any, ctx: RequestContext, max_bytes: int) -> bytes:
    """The raw body, refused as 413 before reading when it is declared too large."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        ctx.body_bytes = declared
        raise PayloadTooLarge(f"the body is {declared:,} bytes; the limit is {max_bytes:,}")
    data = request.stream.read(max_bytes + 1)
    ctx.body_bytes = len(data)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the body is larger than the limit of {max_bytes:,} bytes")
    if not data:
        raise BadRequest("the request body is empty")
    return data


def check_images(gw: Gateway, ctx: RequestContext, images: Sequence[bytes]) -> list[ImageInfo]:
    """Header checks of every image before any backend work, then the quota."""
    max_pixels = gw.config.limits.max_pixels
    infos = []
    for i, data in enumerate(images):
        try:
            info = probe(data, max_pixels)
            decode_budget.check(gw.config, info.width, info.height, info.mode)
        except GatewayError as exc:
            if i == 0:
                ctx.image = {"bytes": len(data), "width": None, "height": None, "format": None}
            raise _for_instance(exc, i, len(images)) from exc
        if i == 0:
            ctx.image = {
                "bytes": len(data),
                "width": info.width,
                "height": info.height,
                "format": info.format,
            }
        infos.append(info)
    gw.usage.check_quota(ctx, images=len(images))
    return infos


def run_slides(
    gw: Gateway, ctx: RequestContext, svc: Service, images: Sequence[bytes], threshold: float
) -> list[tuple[SlideResult, merging.Merged]]:
    """Each slide decoded once, tiled, sent, merged; one deadline for the whole request."""
    deadline = time.monotonic() + svc.config.backend.timeout_s
    try:
        svc.backend.ensure_reachable(deadline)  # a quick 503 before tiling when it is down
    except BackendUnavailable:
        for i, data in enumerate(images):  # but an image's own fault first (422, not 503)
            try:
                image_faults.check_decodable(gw.config, data)
            except (PayloadTooLarge, UnsupportedImage, UndecodableImage) as exc:
                raise _for_instance(exc, i, len(images)) from exc
        raise
    out = []
    for i, data in enumerate(images):
        try:
            with decode_budget.decoding(gw.config, data):  # waits for memory, or 503
                result = detect_slide_bytes(
                    data, gw.config.limits.max_pixels, svc.config, svc.backend, deadline
                )
        except (PayloadTooLarge, UnsupportedImage, UndecodableImage) as exc:
            raise _for_instance(exc, i, len(images)) from exc  # the image's fault, not the model's
        kept = merging.above(result.detections, threshold)
        ctx.tiles += len(result.tiles)
        ctx.backend_ms += result.backend_ms
        ctx.detections += len(kept)
        ctx.backend_model, ctx.backend_version = result.model, result.version
        out.append((result, kept))
    return out
