"""The Open Inference Protocol (KServe V2, Triton's REST API) inbound, for every service
whose kind fits: ``GET /v2``, health, model metadata and readiness, and
``POST /v2/models/{service}[/versions/{v}]/infer``.

Images arrive as a ``BYTES`` tensor, binary (Triton's extension) or base64 strings; the
kind's use case runs exactly as for TF Serving's ``:predict`` and its per-instance rows
are answered as tensors (:mod:`gateway.codecs.v2_api`).  A passthrough service whose
model speaks this protocol gets the body as it came.  Errors keep the protocol's
``{"error": ...}`` shape, with the gateway's ``code`` and ``request_id`` beside.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Response

import gateway
from gateway import logs
from gateway.codecs import v2_api as wire
from gateway.context import RequestContext
from gateway.errors import UnknownVersion
from gateway.handlers.bookkeeping import Admitted, Served, require_route
from gateway.handlers.common import read_body
from gateway.handlers.predict import forwarded
from gateway.handlers.responses import json_response
from gateway.runtime import Gateway

EXTENSIONS = ("binary_tensor_data",)


def server_metadata(gw: Gateway, request: Any, ctx: RequestContext) -> Response:
    return json_response(200, wire.server_metadata("eos-gateway", gateway.__version__, EXTENSIONS))


def live(gw: Gateway, request: Any, ctx: RequestContext) -> Response:
    return json_response(200, {"live": True})


def _ready(gw: Gateway, name: str, version: str | None = None) -> str | None:
    """None when ready, else why not (``unreachable``, ``model_not_available``...); the
    model server's own text goes to the logs only."""
    svc = gw.services.get(name)
    state = svc.backend.pinned(version).readiness()
    if state.ready:
        return None
    reason = state.reason or "not_ready"
    logs.emit("WARNING", "model not ready", service=name, reason=reason, backend_error=state.detail)
    return reason


def ready(gw: Gateway, request: Any, ctx: RequestContext) -> Response:
    """Ready when every service's model is: a client waits on this before inferring."""
    names = gw.services.names()
    with ThreadPoolExecutor(max_workers=max(1, min(len(names), 8))) as pool:
        reasons = dict(zip(names, pool.map(lambda n: _ready(gw, n), names), strict=True))
    not_ready = {n: r for n, r in sorted(reasons.items()) if r is not None}
    if not not_ready:
        return json_response(200, {"ready": True})
    listed = ", ".join(f"{n} ({r})" for n, r in not_ready.items())
    return _not_ready(ctx, f"not ready: {listed}", {"reasons": not_ready})


def model_metadata(
    gw: Gateway, request: Any, ctx: RequestContext, service: str, version: str | None = None
) -> Response:
    ctx.service = service
    svc = gw.services.get(service)
    backend = svc.backend.pinned(version)
    if svc.kind.forwards and hasattr(backend, "metadata"):
        # The model's own inputs and outputs: the body is the model's, not the gateway's.
        return json_response(200, {**backend.metadata(), "name": service})
    state = backend.readiness()
    if version is not None and not state.ready:
        raise UnknownVersion(f"the model server has no version {version} of this model ready")
    served = version or state.version
    outputs = {o.name: (o.datatype, list(o.shape)) for o in svc.kind.outputs}
    doc = wire.model_metadata(
        service, [served] if served else [], outputs, platform=f"eos-gateway/{svc.config.kind}"
    )
    return json_response(200, doc)


def model_ready(
    gw: Gateway, request: Any, ctx: RequestContext, service: str, version: str | None = None
) -> Response:
    ctx.service = service
    reason = _ready(gw, service, version)
    if reason is None:
        return json_response(200, {"name": service, "ready": True})
    message = f"the model of service {service!r} is not ready ({reason})"
    return _not_ready(ctx, message, {"name": service, "reason": reason})


def _not_ready(ctx: RequestContext, message: str, extra: dict[str, Any]) -> Response:
    """503 in the error body every route answers, with the protocol's ``ready: false``."""
    ctx.status, ctx.error_code, ctx.error_message = 503, "not_ready", message
    body = {"error": message, "code": "not_ready", "request_id": ctx.request_id}
    return json_response(503, {**body, **extra, "ready": False})


def infer(
    gw: Gateway,
    request: Any,
    ctx: RequestContext,
    admitted: Admitted,
    version: str | None = None,
) -> Served:
    svc = admitted.service
    require_route(svc, "infer")
    backend = svc.backend.pinned(version)  # kept for the model server
    body = read_body(request, ctx, gw.config.limits.max_body_bytes)
    header_length = request.headers.get(wire.HEADER_LENGTH)
    if svc.kind.forwards:
        described = {"Content-Type": request.headers.get("Content-Type") or "application/json"}
        if header_length is not None:
            described[wire.HEADER_LENGTH] = header_length
        return forwarded(
            svc,
            body,
            admitted,
            backend,
            lambda b: wire.passthrough_batch_size(b, header_length),
            described,
        )
    req = wire.parse_infer_request(
        body, header_length, max_instances=gw.config.limits.max_instances
    )
    del body
    result = svc.kind.infer(
        svc,
        req.images,
        req.threshold,
        limits=gw.config.limits,
        quota=admitted.quota,
        backend=backend,
    )
    keys = req.keys or [None] * len(req.images)
    rows = svc.kind.rows(result, keys)
    model_version = result.facts.backend_version or version
    answer, headers = wire.encode_infer_response(
        rows, req, model_name=svc.config.name, model_version=model_version
    )
    response = Response(answer, status=200, headers=headers)
    return Served(response, result.facts)
