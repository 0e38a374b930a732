"""``POST /v1/services/{service}:detect``: the API for scripts and apps."""

from __future__ import annotations

import io
from typing import Any

from flask import Response

from gateway.codecs import detect as wire
from gateway.codecs import geojson
from gateway.context import RequestContext
from gateway.handlers.bookkeeping import Admitted, Served, require_route
from gateway.handlers.common import read_image_request
from gateway.handlers.responses import json_response
from gateway.jsonio import dumps
from gateway.pipeline import decode_budget
from gateway.pipeline.images import ImageInfo, decode_image
from gateway.pipeline.merge import Merged
from gateway.runtime import Gateway
from gateway.usecases.detection import detect

ANSWERS = {"application/json": "json", geojson.MEDIA_TYPE: "geojson", "image/jpeg": "jpeg"}


def answer_format(request: Any, req: wire.DetectRequest) -> str:
    """``"jpeg"``, ``"geojson"`` or ``"json"``: what the request names (``render``,
    ``format``) wins; otherwise the ``Accept`` header, JSON when it prefers none of them."""
    if req.render == "jpeg":
        return "jpeg"
    if req.format is not None:
        return req.format
    accept = request.accept_mimetypes
    if not accept:
        return "json"
    best = accept.best_match(list(ANSWERS))
    return ANSWERS[best] if best is not None and accept.quality(best) > 0 else "json"


def rendered_jpeg(gw: Gateway, data: bytes, info: ImageInfo, kept: Merged) -> bytes:
    """The oriented slide at its own size with every kept box and the count drawn on it.

    The slide is decoded a second time here: the pipeline drops its pixels as soon as the
    tiles are cut, and only rendered answers need them again.  The boxes are drawn on the
    decoded image itself, so the memory is one decode and the answer's JPEG, counted in
    the decode budget as such (``RENDER_COPIES``, checked against ``max_decoded_mb`` when
    the request was admitted).
    """
    from gateway.render import draw_detections  # PIL's drawing and fonts: off :detect's cold start

    limits = gw.config.limits
    with decode_budget.decoding(limits, info, copies=decode_budget.RENDER_COPIES):
        _, image = decode_image(data, limits.max_pixels)
        annotated = draw_detections(
            image, kept.boxes.tolist(), kept.scores.tolist(), count_text=True, copy=False
        )
        del image
        out = io.BytesIO()
        annotated.save(out, format="JPEG", quality=88)
        del annotated
        return out.getvalue()


def handle(gw: Gateway, request: Any, ctx: RequestContext, admitted: Admitted) -> Served:
    svc = admitted.service
    require_route(svc, ":detect")
    req: wire.DetectRequest = read_image_request(gw, request, ctx, wire)
    answer = answer_format(request, req)
    found = admitted.run(
        lambda s, quota: detect(
            s,
            [req.image],
            req.threshold,
            limits=gw.config.limits,
            quota=quota,
            rendered=answer == "jpeg",
        )
    )
    (detected,) = found.slides
    slide, kept = detected.slide, detected.kept
    if answer == "jpeg":
        picture = Response(
            rendered_jpeg(gw, req.image, detected.info, kept),
            status=200,
            mimetype="image/jpeg",
            headers={"X-Detections-Count": str(len(kept))},
        )
        return Served(picture, found.facts)
    body = {
        "service": svc.config.name,
        "key": req.key,
        "count": len(kept),
        "threshold": found.threshold,
        "image": {"width": slide.width, "height": slide.height, "format": slide.format},
        "tiles": len(slide.tiles),
        "detections": wire.detections(kept, slide.labels),
        "model": admitted.model(slide.model, slide.version),
        "request_id": ctx.request_id,
    }
    if answer == "geojson":
        dets = body.pop("detections")
        doc = geojson.feature_collection(dets, slide.labels, about=body)
        answered = Response(
            dumps(doc),
            status=200,
            mimetype=geojson.MEDIA_TYPE,
            headers={"X-Detections-Count": str(len(kept))},
        )
        return Served(answered, found.facts)
    return Served(json_response(200, body), found.facts)
