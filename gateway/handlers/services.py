"""``GET /v1/services``: what this gateway serves, without secrets."""

from __future__ import annotations

from typing import Any

from flask import Response

from gateway.context import RequestContext
from gateway.errors import UnknownService
from gateway.handlers.responses import json_response
from gateway.runtime import Gateway


def list_services(gw: Gateway, request: Any, ctx: RequestContext) -> Response:
    services = [cfg.public() for cfg in gw.config.services.values()]
    return json_response(200, {"services": services})


def get_service(gw: Gateway, request: Any, ctx: RequestContext, service: str) -> Response:
    cfg = gw.config.service(service)
    if cfg is None:
        raise UnknownService(f"unknown service {service!r}")
    ctx.service = service
    return json_response(200, cfg.public())
