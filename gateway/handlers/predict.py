"""``POST /v1/models/{service}[/versions/{n}|/labels/{l}]:predict``: TF Serving's API, for
every kind that takes images, and a TF Serving model's passthrough; ``POST /`` is the same
on the default service.

The body's images go to the kind's use case and the per-instance rows it answers are
written as TF Serving writes predictions.  A pinned version or label is kept for the
model server.
"""

from __future__ import annotations

from typing import Any

from flask import Response

from gateway.codecs import tfserving_api as wire
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.handlers.bookkeeping import Admitted, Served, require_route
from gateway.handlers.common import read_body
from gateway.handlers.responses import json_response
from gateway.runtime import Gateway


def handle(
    gw: Gateway,
    request: Any,
    ctx: RequestContext,
    admitted: Admitted,
    version: str | None = None,
    label: str | None = None,
) -> Served:
    svc = admitted.service
    require_route(svc, ":predict")
    backend = svc.backend.pinned(wire.parse_version(version), label)  # kept for the server
    body = read_body(request, ctx, gw.config.limits.max_body_bytes)
    if svc.kind.forwards:
        return forwarded(svc, body, admitted, backend, wire.passthrough_batch_size)
    req = wire.parse_predict_request(
        body,
        query_threshold=request.args.get("threshold"),
        max_instances=gw.config.limits.max_instances,
    )
    del body
    images = [inst.image for inst in req.instances]
    result = admitted.run(
        lambda s, quota: s.kind.infer(
            s,
            images,
            req.threshold,
            limits=gw.config.limits,
            quota=quota,
            backend=backend if s is svc else None,  # a shadow runs its own
        )
    )
    rows = svc.kind.rows(result, [inst.key for inst in req.instances])
    return Served(json_response(200, wire.predict_response(rows, req.columnar)), result.facts)


def forwarded(
    svc: Any,
    body: bytes,
    admitted: Admitted,
    backend: Any,
    batch_size: Any,
    headers: dict[str, str] | None = None,
) -> Served:
    """A passthrough service's answer: the model's 2xx as it is; its 4xx in the gateway's
    shape with the model's status and words."""
    from gateway.usecases.passthrough import forward  # imported by those who use it

    found = admitted.run(
        lambda s, quota: forward(
            s,
            body,
            batch_size=batch_size,
            quota=quota,
            backend=backend if s is svc else None,
            headers=headers,
        )
    )
    answer = found.answer
    if answer.status < 300:
        response = Response(answer.body, status=answer.status, mimetype="application/json")
        for name, value in answer.headers.items():
            response.headers[name] = value
        return Served(response, found.facts)
    error = GatewayError(
        answer.error or "the model refused the request", status=answer.status, code="model_rejected"
    )
    error.facts = found.facts
    raise error
