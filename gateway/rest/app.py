"""The one HTTP entry point: route, admit, answer errors as JSON, record usage, log.

Every request passes through :func:`handle`: a model route's caller is admitted and its
use case's facts kept (:mod:`gateway.handlers.bookkeeping`), its answer given the
caller's ``RateLimit`` fields and its usage record finished, and every route's access line
written, here and nowhere else.
"""

from __future__ import annotations

import traceback
from typing import Any

from flask import Response
from werkzeug.exceptions import HTTPException

from gateway import logs
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.handlers.bookkeeping import serve_model_route
from gateway.handlers.responses import error_response
from gateway.memory import idle_trim
from gateway.rest import routes
from gateway.rest.client_address import client_ip
from gateway.rest.http_errors import from_http_exception
from gateway.rest.unread_body import refuse_unread_body
from gateway.runtime import current_gateway, get_gateway


def _client_ip(request: Any, gw: Any = None) -> str | None:
    gw = gw if gw is not None else current_gateway()
    return client_ip(request, gw.config if gw is not None else None)


def framework_error(exc: Any) -> Response:
    """JSON for errors raised by Flask/werkzeug before :func:`handle` runs.

    functions-framework's own URL rules refuse some paths (a ``%0A`` in it, ``/robots.txt``)
    with an HTML page; this keeps the one error shape, and CORS headers, on every route.
    """
    from flask import request

    ctx = RequestContext(method=request.method, path=request.path)
    ctx.route = "unrouted"
    shape = routes.error_shape(request.path, None)
    response = error_response(ctx, from_http_exception(exc), shape)
    response.headers["X-Request-Id"] = ctx.request_id
    gw = None
    try:
        gw = get_gateway()
        response.headers.update(gw.cors.headers(request))
    except Exception:  # a broken configuration is reported by the routes themselves
        pass
    logs.access(ctx, _client_ip(request, gw))
    return response


def handle(request: Any) -> Response:
    idle_trim.started()
    try:
        response = _handle(request)
        refuse_unread_body(request)
        return response
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
            if route.records_usage:
                response = serve_model_route(gw, request, ctx, route.handler, found.params)
            else:
                response = route.handler(gw, request, ctx, **found.params)
    except GatewayError as exc:
        response = error_response(ctx, exc, routes.error_shape(request.path, route))
        if exc.detail:
            logs.backend_error(ctx, exc.detail)
    except HTTPException as exc:  # werkzeug's refusals while parsing (multipart limits)
        shape = routes.error_shape(request.path, route)
        response = error_response(ctx, from_http_exception(exc), shape)
    except Exception:
        ctx.error_code = "internal"
        logs.error(ctx, "unhandled error", traceback.format_exc())
        internal = GatewayError("internal error; the request id is logged")
        response = error_response(ctx, internal, routes.error_shape(request.path, route))
    ctx.status = response.status_code
    ctx.response_bytes = response.content_length or 0
    if gw is not None and route is not None and route.records_usage:
        try:
            response.headers.update(gw.usage.rate_limit_headers(ctx))
            gw.usage.finish(ctx)
        except Exception:
            logs.error(ctx, "usage recording failed", traceback.format_exc())
    response.headers["X-Request-Id"] = ctx.request_id
    if gw is not None and request.method != "OPTIONS":
        response.headers.update(gw.cors.headers(request))
    logs.access(ctx, _client_ip(request, gw))
    return response
