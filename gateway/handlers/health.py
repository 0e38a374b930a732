"""Liveness, readiness, and TF Serving's model-status route."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Response

from gateway import logs
from gateway.auth import FailClosedAuthenticator
from gateway.codecs.tfserving_api import parse_version
from gateway.context import RequestContext
from gateway.handlers.responses import json_response
from gateway.pipeline import jpegcut
from gateway.runtime import Gateway


def healthz(gw: Gateway, request: Any, ctx: RequestContext) -> Response:
    return json_response(200, {"status": "ok"})


def _readiness(gw: Gateway, name: str) -> dict[str, Any]:
    """The state and the class of the failure (``unreachable``, ``model_not_available``...):
    these routes answer without credentials, so the model server's text is logged instead."""
    r = gw.services.get(name).backend.readiness()
    if not r.ready:
        logs.emit(
            "WARNING", "model not ready", service=name, reason=r.reason, backend_error=r.detail
        )
    state = "ready" if r.ready else "not ready"
    return {
        "ready": r.ready,
        "detail": state,
        "reason": None if r.ready else r.reason,
        "model": r.model,
        "version": r.version,
    }


def readyz(gw: Gateway, request: Any, ctx: RequestContext) -> Response:
    names = gw.services.names()
    with ThreadPoolExecutor(max_workers=max(1, min(len(names), 8))) as pool:
        states = dict(zip(names, pool.map(lambda n: _readiness(gw, n), names), strict=True))
    not_ready = sorted(n for n, s in states.items() if not s["ready"])
    # Fail-closed auth refuses every call to every service: not ready either.
    refusing = gw.auth.message if isinstance(gw.auth, FailClosedAuthenticator) else None
    if not not_ready and refusing is None:
        body = {"status": "ready", "services": states, "image_path": jpegcut.image_path()}
        return json_response(200, body)
    ctx.status, ctx.error_code = 503, "not_ready"
    problems = ([f"auth: {refusing}"] if refusing else []) + [
        f"{n} ({states[n]['reason']})" for n in not_ready
    ]
    body = {
        "error": f"not ready: {'; '.join(problems)}",
        "code": "not_ready",
        "request_id": ctx.request_id,
        "status": "not ready",
        "services": states,
        "image_path": jpegcut.image_path(),
    }
    if refusing:
        body["auth"] = {"ready": False, "detail": refusing}
    return json_response(503, body)


def model_status(
    gw: Gateway,
    request: Any,
    ctx: RequestContext,
    service: str,
    version: str | None = None,
    label: str | None = None,
) -> Response:
    """``GET /v1/models/{service}[/versions/{n}|/labels/{l}]`` answered as TF Serving
    does, with the model server's own versions, for clients that poll it."""
    ctx.service = service
    backend = gw.services.get(service).backend
    return json_response(200, backend.model_status(parse_version(version), label))
