"""JSON responses and the one error body every route uses."""

from __future__ import annotations

from typing import Any

from flask import Response

from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.jsonio import dumps


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status=status, headers=headers or {}, mimetype="application/json")


def error_response(ctx: RequestContext, exc: GatewayError) -> Response:
    ctx.status, ctx.error_code, ctx.error_message = exc.status, exc.code, exc.message
    body = {"error": exc.message, "code": exc.code, "request_id": ctx.request_id}
    return json_response(exc.status, body, exc.headers)
