"""A model request's bookkeeping, in one place around its handler.

Who is calling, which service and may they use it, the usage record begun, the quota
offered to the use case, and what the use case learnt (its :class:`~gateway.context.Facts`,
returned with its result or attached to its error) written into the request context that
the usage record and the access log are made of (:func:`gateway.rest.app.handle` finishes
both for every route).  Handlers adapt HTTP to a use case and its result to an answer;
use cases never see the request context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Response

from gateway.context import Facts, RequestContext
from gateway.errors import BadRequest, GatewayError, NoDefaultService
from gateway.kinds.base import ROUTE_PATHS
from gateway.registry import Service
from gateway.runtime import Gateway
from gateway.usecases.checks import Quota


@dataclass(frozen=True)
class Admitted:
    """A caller let in to a service: the service, and the caller's quota for this request."""

    service: Service
    quota: Quota


@dataclass(frozen=True)
class Served:
    response: Response
    facts: Facts | None = None  # what the use case learnt (None: no model work)


def _service_name(gw: Gateway, name: str | None) -> str:
    if name is not None:
        return name
    default = gw.config.default_service_name()
    if default is None:
        raise NoDefaultService(
            "several services are configured and none is the default_service; "
            "POST to /v1/models/{service}:predict"
        )
    return default


def admit(gw: Gateway, request: Any, ctx: RequestContext, name: str | None) -> Admitted:
    """Who is calling and may they use this service; then usage recording starts."""
    ctx.service = _service_name(gw, name)
    gw.auth.authenticate(request, ctx)
    svc = gw.services.get(ctx.service)
    gw.auth.authorize(ctx, svc.config)
    gw.usage.begin(ctx)
    return Admitted(svc, lambda images: gw.usage.check_quota(ctx, images))


def serve_model_route(
    gw: Gateway,
    request: Any,
    ctx: RequestContext,
    handler: Callable[..., Served],
    params: dict[str, Any],
) -> Response:
    """Admit, run the handler, and keep what its use case learnt, failed or not."""
    params = dict(params)
    admitted = admit(gw, request, ctx, params.pop("service", None))
    try:
        served = handler(gw, request, ctx, admitted, **params)
    except GatewayError as exc:
        if isinstance(exc.facts, Facts):
            ctx.record(exc.facts)
        raise
    if served.facts is not None:
        ctx.record(served.facts)
    return served.response


def require_route(svc: Service, route: str) -> None:
    """A 400 naming the routes that fit, when this one does not fit the service's kind."""
    kind, cfg = svc.kind, svc.config
    if kind.serves(route, cfg):
        return
    fits = [r for r in ROUTE_PATHS if kind.serves(r, cfg)]
    paths = " or ".join(ROUTE_PATHS[r].format(name=cfg.name) for r in fits) or "no route"
    raise BadRequest(
        f"{route} does not apply to service {cfg.name!r}, a {cfg.kind} service; use {paths}",
        code="wrong_route",
    )
