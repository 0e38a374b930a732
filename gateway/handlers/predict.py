"""``POST /v1/models/{service}:predict``: TF Serving's API, whole slides in, slide boxes out."""

from __future__ import annotations

from typing import Any

from flask import Response

from gateway.codecs import tfserving_api as wire
from gateway.context import RequestContext
from gateway.handlers.common import admit, check_images, read_body, run_slides
from gateway.handlers.responses import json_response
from gateway.runtime import Gateway


def handle(gw: Gateway, request: Any, ctx: RequestContext, service: str) -> Response:
    svc = admit(gw, request, ctx, service)
    body = read_body(request, ctx, gw.config.limits.max_body_bytes)
    req = wire.parse_predict_request(
        body,
        query_threshold=request.args.get("threshold"),
        max_instances=gw.config.limits.max_instances,
    )
    del body
    ctx.instances = len(req.instances)
    threshold = svc.config.threshold if req.threshold is None else req.threshold
    ctx.threshold = threshold
    images = [inst.image for inst in req.instances]
    check_images(gw, ctx, images)
    predictions = []
    for inst, (result, kept) in zip(
        req.instances, run_slides(gw, ctx, svc, images, threshold), strict=True
    ):
        predictions.append(
            wire.prediction(
                kept, result.width, result.height, result.labels, result.class_values, inst.key
            )
        )
    return json_response(200, wire.predict_response(predictions, req.columnar))
