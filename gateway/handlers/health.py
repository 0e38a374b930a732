"""Liveness, readiness, and TF Serving's model-status route."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Response

from gateway import logs
from gateway.context import RequestContext
from gateway.errors import BackendUnavailable
from gateway.rest.responses import json_response
from gateway.runtime import Gateway


def healthz(gw: Gateway, request: Any, ctx: RequestContext) -> Response:
    return json_response(200, {"status": "ok"})


def _readiness(gw: Gateway, name: str) -> dict[str, Any]:
    """State only: these routes answer without credentials, the model server's text is
    logged instead."""
    r = gw.services.get(name).backend.readiness()
    if not r.ready:
        logs.emit("WARNING", "model not ready", service=name, backend_error=r.detail)
    state = "ready" if r.ready else "not ready"
    return {"ready": r.ready, "detail": state, "model": r.model, "version": r.version}


def readyz(gw: Gateway, request: Any, ctx: RequestContext) -> Response:
    names = gw.services.names()
    with ThreadPoolExecutor(max_workers=max(1, min(len(names), 8))) as pool:
        states = dict(zip(names, pool.map(lambda n: _readiness(gw, n), names), strict=True))
    not_ready = sorted(n for n, s in states.items() if not s["ready"])
    if not not_ready:
        return json_response(200, {"status": "ready", "services": states})
    ctx.status, ctx.error_code = 503, "not_ready"
    body = {
        "error": f"not ready: {', '.join(not_ready)}",
        "code": "not_ready",
        "request_id": ctx.request_id,
        "status": "not ready",
        "services": states,
    }
    return json_response(503, body)


def model_status(gw: Gateway, request: Any, ctx: RequestContext, service: str) -> Response:
    """``GET /v1/models/{service}`` answered as TF Serving does, for clients that poll it."""
    ctx.service = service
    svc = gw.services.get(service)
    r = svc.backend.readiness()
    if not r.ready:
        raise BackendUnavailable(
            f"the model of {service!r} is not available", detail=f"readiness: {r.detail}"
        )
    return json_response(
        200,
        {
            "model_version_status": [
                {
                    "version": r.version or "1",
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        },
    )
