"""``POST /v1/models/{service}[/versions/{n}|/labels/{l}]:predict``: TF Serving's API, for
every kind of service; ``POST /`` is the same on the default service.

A detector takes whole slides and answers slide boxes; a classifier takes whole images
and answers the model's scores and labels; a passthrough service's body and answer go
through unchanged.  A pinned version or label is kept for the model server.
"""

from __future__ import annotations

from typing import Any

from flask import Response

from gateway.backends.base import Backend
from gateway.codecs import tfserving_api as wire
from gateway.config import CLASSIFICATION, PASSTHROUGH
from gateway.context import RequestContext
from gateway.errors import GatewayError, NoDefaultService
from gateway.handlers.common import admit, read_body
from gateway.handlers.responses import json_response
from gateway.registry import Service
from gateway.runtime import Gateway
from gateway.usecases.detection import detect


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
    if svc.config.kind == PASSTHROUGH:
        return _passthrough(gw, ctx, svc, body, backend)
    req = wire.parse_predict_request(
        body,
        query_threshold=request.args.get("threshold"),
        max_instances=gw.config.limits.max_instances,
    )
    del body
    images = [inst.image for inst in req.instances]
    keys = [inst.key for inst in req.instances]
    limits, quota = gw.config.limits, gw.usage
    if svc.config.kind == CLASSIFICATION:
        from gateway.usecases.classification import classify  # imported by those who use it

        found = classify(svc, images, ctx=ctx, limits=limits, quota=quota, backend=backend)
        predictions = [
            wire.classification(c.labels, c.scores, key)
            for c, key in zip(found.images, keys, strict=True)
        ]
        return json_response(200, wire.predict_response(predictions, req.columnar))
    # TF Serving's answer cuts nothing unless a threshold is asked for: 0 keeps every score.
    threshold = 0.0 if req.threshold is None else req.threshold
    detected = detect(
        svc, images, threshold, ctx=ctx, limits=limits, quota=quota, backend=backend
    )
    predictions = [
        wire.prediction(
            s.kept, s.slide.width, s.slide.height, s.slide.labels, s.slide.class_values, key
        )
        for s, key in zip(detected.slides, keys, strict=True)
    ]
    return json_response(200, wire.predict_response(predictions, req.columnar))


def _passthrough(
    gw: Gateway, ctx: RequestContext, svc: Service, body: bytes, backend: Backend
) -> Response:
    from gateway.usecases.passthrough import forward  # imported by those who use it

    answer = forward(svc, body, ctx=ctx, quota=gw.usage, backend=backend)
    if answer.status < 300:
        return Response(answer.body, status=answer.status, mimetype="application/json")
    # A 4xx is the client's to fix: its status and the model's words, in the gateway's shape.
    raise GatewayError(
        answer.error or "the model refused the request", status=answer.status, code="model_rejected"
    )
def handle_root(gw: Gateway, request: Any, ctx: RequestContext) -> Response:
    """``POST /``: the function's own URL, where a TF Serving client may post as it is."""
    service = gw.config.default_service_name()
    if service is None:
        raise NoDefaultService(
            "several services are configured and none is the default_service; "
            "POST to /v1/models/{service}:predict"
        )
    return handle(gw, request, ctx, service)
