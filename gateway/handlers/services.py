"""``GET /v1/services``: what this gateway serves, without secrets."""

from __future__ import annotations

from typing import Any

from flask import Response

from gateway.context import RequestContext
from gateway.handlers.responses import json_response
from gateway.kinds.base import ROUTE_PATHS
from gateway.registry import Service
from gateway.runtime import Gateway


def public(svc: Service) -> dict[str, Any]:
    """Every service's fields, its kind's own, and the routes it answers."""
    cfg, kind = svc.config, svc.kind
    out = {**cfg.public(), **kind.public(cfg)}
    out["routes"] = [
        ROUTE_PATHS[r].format(name=cfg.name) for r in ROUTE_PATHS if kind.serves(r, cfg)
    ]
    # What the command line and the demo page send an image to, if anything.
    out["image_route"] = kind.cli.route if kind.cli is not None else None
    return out


def list_services(gw: Gateway, request: Any, ctx: RequestContext) -> Response:
    services = [public(gw.services.get(name)) for name in gw.services.names()]
    return json_response(200, {"services": services})


def get_service(gw: Gateway, request: Any, ctx: RequestContext, service: str) -> Response:
    svc = gw.services.get(service)  # UnknownService: 404
    ctx.service = service
    return json_response(200, public(svc))
