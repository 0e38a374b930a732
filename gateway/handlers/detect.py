"""``POST /v1/services/{service}:detect``: the API for scripts and apps."""

from __future__ import annotations

from typing import Any

from flask import Response

from gateway.codecs import detect as wire
from gateway.context import RequestContext
from gateway.errors import PayloadTooLarge
from gateway.handlers.common import admit, check_images, read_body, run_slides
from gateway.rest.responses import json_response
from gateway.runtime import Gateway


def _parse(gw: Gateway, request: Any, ctx: RequestContext) -> wire.DetectRequest:
    content_type = (request.mimetype or "").lower()
    limit = gw.config.limits.max_body_bytes
    if content_type == "multipart/form-data":
        declared = request.content_length
        ctx.body_bytes = declared or 0
        if declared is None or declared > limit:
            raise PayloadTooLarge(
                f"multipart uploads need a Content-Length of at most {limit:,} bytes"
            )
        return wire.parse_form(request.files, request.form, request.args)
    body = read_body(request, ctx, limit)
    if content_type in ("application/json", "") or content_type.endswith("+json"):
        return wire.parse_json(body, request.args)
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        return wire.parse_raw(body, request.args)
    raise wire.unsupported_content_type(content_type)


def handle(gw: Gateway, request: Any, ctx: RequestContext, service: str) -> Response:
    svc = admit(gw, request, ctx, service)
    req = _parse(gw, request, ctx)
    ctx.instances = 1
    threshold = svc.config.threshold if req.threshold is None else req.threshold
    ctx.threshold = threshold
    (info,) = check_images(gw, ctx, [req.image])
    ((result, kept),) = run_slides(gw, ctx, svc, [req.image], threshold)
    body = {
        "service": svc.config.name,
        "key": req.key,
        "count": len(kept),
        "threshold": threshold,
        "image": {"width": result.width, "height": result.height, "format": result.format},
        "tiles": len(result.tiles),
        "detections": wire.detections(kept, result.labels),
        "model": {"name": result.model, "version": result.version},
        "request_id": ctx.request_id,
    }
    return json_response(200, body)
