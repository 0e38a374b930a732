"""The one HTTP entry point: route, answer errors as JSON, log, record usage."""

from __future__ import annotations

import traceback
from typing import Any

from flask import Response

from gateway import logs
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.handlers.responses import error_response
from gateway.memory import idle_trim
from gateway.rest import routes
from gateway.runtime import get_gateway


def _client_ip(request: Any) -> str | None:
    """The caller's address with the host part dropped: enough for abuse triage, no more."""
    forwarded = request.headers.get("X-Forwarded-For", "")
    ip = forwarded.split(",")[0].strip() or (request.remote_addr or "")
    if not ip:
        return None
    if ":" in ip:  # IPv6: keep the /48
        return ":".join(ip.split(":")[:3]) + "::"
    parts = ip.split(".")
    return ".".join(parts[:3] + ["0"]) if len(parts) == 4 else None


_FRAMEWORK_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    431: "headers_too_large",
}


def framework_error(exc: Any) -> Response:
    """JSON for errors raised by Flask/werkzeug before :func:`handle` runs.

    functions-framework's own URL rules refuse some paths (a ``%0A`` in it, ``/robots.txt``)
    with an HTML page; this keeps the one error shape on every route.
    """
    from flask import request

    status = int(getattr(exc, "code", None) or 500)
    ctx = RequestContext(method=request.method, path=request.path)
    ctx.route = "unrouted"
    message = "no route for this path" if status == 404 else str(getattr(exc, "name", "error"))
    code = _FRAMEWORK_CODES.get(status, "internal" if status >= 500 else "bad_request")
    response = error_response(ctx, GatewayError(message, status=status, code=code))
    response.headers["X-Request-Id"] = ctx.request_id
    ctx.status = status
    logs.access(ctx, _client_ip(request))
    return response


def handle(request: Any) -> Response:
    idle_trim.started()
    try:
        return _handle(request)
    finally:
        idle_trim.finished()


def _handle(request: Any) -> Response:
    ctx = RequestContext(method=request.method, path=request.path)
    ctx.trace = logs.trace_id(request.headers)
    ctx.user_agent = (request.headers.get("User-Agent") or "")[:200] or None
    route = None
    gw = None
    try:
        gw = get_gateway()
        if request.method == "OPTIONS":
            ctx.route = "preflight"
            status, headers = gw.cors.preflight(request)
            response = Response(status=status, headers=headers)
        else:
            found = routes.match(request.method, request.path)
            route = found.route
            ctx.route = route.name
            response = route.handler(gw, request, ctx, **found.params)
    except GatewayError as exc:
        response = error_response(ctx, exc)
    except Exception:
        ctx.error_code = "internal"
        logs.error(ctx, "unhandled error", traceback.format_exc())
        response = error_response(ctx, GatewayError("internal error; the request id is logged"))
    ctx.status = response.status_code
    ctx.response_bytes = response.content_length or 0
    if gw is not None and route is not None and route.records_usage:
        try:
            gw.usage.finish(ctx)
        except Exception:
            logs.error(ctx, "usage recording failed", traceback.format_exc())
    response.headers["X-Request-Id"] = ctx.request_id
    if gw is not None and request.method != "OPTIONS":
        response.headers.update(gw.cors.headers(request))
    logs.access(ctx, _client_ip(request))
    return response
