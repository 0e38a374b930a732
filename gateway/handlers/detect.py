"""``POST /v1/services/{service}:detect``: the API for scripts and apps."""

from __future__ import annotations

import io
from typing import Any

from flask import Response
from PIL import Image

from gateway.codecs import detect as wire
from gateway.context import RequestContext
from gateway.errors import PayloadTooLarge
from gateway.handlers.common import admit, check_images, read_body, run_slides
from gateway.pipeline import decode_budget
from gateway.pipeline.images import decode
from gateway.pipeline.merge import Merged
from gateway.render import draw_detections
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


def wants_jpeg(request: Any, req: wire.DetectRequest) -> bool:
    """``"render": "jpeg"`` in the body, or an ``Accept`` header that prefers JPEG to JSON."""
    if req.render == "jpeg":
        return True
    accept = request.accept_mimetypes
    if not accept or accept.quality("image/jpeg") <= 0:
        return False
    return accept.best_match(["application/json", "image/jpeg"]) == "image/jpeg"


def rendered_jpeg(gw: Gateway, data: bytes, kept: Merged) -> bytes:
    """The oriented slide at its own size with every kept box and the count drawn on it.

    The slide is decoded a second time here: the pipeline drops its pixels as soon as the
    tiles are cut, and only rendered answers need them again.
    """
    with decode_budget.decoding(gw.config, data, copies=2):  # the slide and its drawing
        image = decode(data, gw.config.limits.max_pixels)
        annotated = draw_detections(
            Image.fromarray(image.rgb), kept.boxes.tolist(), kept.scores.tolist(), count_text=True
        )
        del image
        out = io.BytesIO()
        annotated.save(out, format="JPEG", quality=88)
    return out.getvalue()


def handle(gw: Gateway, request: Any, ctx: RequestContext, service: str) -> Response:
    svc = admit(gw, request, ctx, service)
    req = _parse(gw, request, ctx)
    ctx.instances = 1
    threshold = svc.config.threshold if req.threshold is None else req.threshold
    ctx.threshold = threshold
    (info,) = check_images(gw, ctx, [req.image])
    ((result, kept),) = run_slides(gw, ctx, svc, [req.image], threshold)
    if wants_jpeg(request, req):
        return Response(
            rendered_jpeg(gw, req.image, kept),
            status=200,
            mimetype="image/jpeg",
            headers={"X-Detections-Count": str(len(kept))},
        )
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
