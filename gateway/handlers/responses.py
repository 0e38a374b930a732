"""JSON responses and the error bodies: the gateway's own on every route, Google's on the
routes of Google's APIs (Vertex AI), whose clients read no other."""

from __future__ import annotations

from typing import Any

from flask import Response

from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.jsonio import dumps


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status=status, headers=headers or {}, mimetype="application/json")


def error_response(ctx: RequestContext, exc: GatewayError, shape: str = "gateway") -> Response:
    """``shape`` is the route's (:attr:`gateway.rest.routes.Route.errors`): ``"gateway"``
    or ``"google"``."""
    ctx.status, ctx.error_code, ctx.error_message = exc.status, exc.code, exc.message
    if shape == "google":
        from gateway.codecs.vertex_api import error_body  # off every other route's cold start

        body: Any = error_body(exc.status, exc.message, exc.code, ctx.request_id)
    else:
        body = {"error": exc.message, "code": exc.code, "request_id": ctx.request_id}
    return json_response(exc.status, body, exc.headers)
