"""``POST /v1/models/{service}[/versions/{n}|/labels/{l}]:predict``: TF Serving's API,
whole slides in, slide boxes out; ``POST /`` is the same on the default service."""

from __future__ import annotations

from typing import Any

from flask import Response

from gateway.codecs import tfserving_api as wire
from gateway.context import RequestContext
from gateway.errors import NoDefaultService
from gateway.handlers.common import admit, check_images, read_body, run_slides
from gateway.handlers.responses import json_response
from gateway.runtime import Gateway


def handle(
    gw: Gateway,
    request: Any,
    ctx: RequestContext,
    service: str,
    version: str | None = None,
    label: str | None = None,
) -> Response:
    svc = admit(gw, request, ctx, service)
    backend = svc.backend.pinned(wire.parse_version(version), label)  # kept for the server
    body = read_body(request, ctx, gw.config.limits.max_body_bytes)
    req = wire.parse_predict_request(
        body,
        query_threshold=request.args.get("threshold"),
        max_instances=gw.config.limits.max_instances,
    )
    del body
    ctx.instances = len(req.instances)
    threshold = req.threshold  # None: TF Serving's answer cuts nothing, at any score
    ctx.threshold = threshold
    images = [inst.image for inst in req.instances]
    check_images(gw, ctx, images)
    predictions = []
    for inst, (result, kept) in zip(
        req.instances, run_slides(gw, ctx, svc, images, threshold, backend), strict=True
    ):
        predictions.append(
            wire.prediction(
                kept, result.width, result.height, result.labels, result.class_values, inst.key
            )
        )
    return json_response(200, wire.predict_response(predictions, req.columnar))


def handle_root(gw: Gateway, request: Any, ctx: RequestContext) -> Response:
    """``POST /``: the function's own URL, where a TF Serving client may post as it is."""
    service = gw.config.default_service_name()
    if service is None:
        raise NoDefaultService(
            "several services are configured and none is the default_service; "
            "POST to /v1/models/{service}:predict"
        )
    return handle(gw, request, ctx, service)
