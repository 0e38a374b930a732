"""``POST /v1/services/{service}:classify``: one image's label and scores, for scripts and apps."""

from __future__ import annotations

from typing import Any

from gateway.codecs import classify as wire
from gateway.context import RequestContext
from gateway.handlers.bookkeeping import Admitted, Served, require_route
from gateway.handlers.common import read_image_request
from gateway.handlers.responses import json_response
from gateway.runtime import Gateway
from gateway.usecases.classification import classify


def handle(gw: Gateway, request: Any, ctx: RequestContext, admitted: Admitted) -> Served:
    svc = admitted.service
    require_route(svc, ":classify")
    req: wire.ClassifyRequest = read_image_request(gw, request, ctx, wire)
    found = admitted.run(
        lambda s, quota: classify(s, [req.image], limits=gw.config.limits, quota=quota)
    )
    (image,) = found.images
    label, score = image.best()
    body = {
        "service": svc.config.name,
        "key": req.key,
        "label": label,
        "score": round(float(score), 6),
        "scores": wire.ranked(image.labels, image.scores),
        "image": {
            "width": image.info.width,
            "height": image.info.height,
            "format": image.info.format,
        },
        "model": admitted.model(found.model, found.version),
        "request_id": ctx.request_id,
    }
    return Served(json_response(200, body), found.facts)
