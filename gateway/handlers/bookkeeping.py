"""A model request's bookkeeping, in one place around its handler.

Who is calling, which service and may they use it, the usage record begun, the quota
offered to the use case, and what the use case learnt (its :class:`~gateway.context.Facts`,
returned with its result or attached to its error) written into the request context that
the usage record and the access log are made of (:func:`gateway.rest.app.handle` finishes
both for every route).  Handlers adapt HTTP to a use case and its result to an answer;
use cases never see the request context.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Response

from gateway import logs
from gateway.context import Facts, RequestContext
from gateway.errors import BackendUnavailable, BadRequest, GatewayError, NoDefaultService
from gateway.handlers.shadow import Shadow, UseCase, run_with_shadow
from gateway.kinds.base import ROUTE_PATHS
from gateway.registry import Service, Variants
from gateway.runtime import Gateway
from gateway.usecases.checks import Quota


@dataclass(frozen=True)
class Admitted:
    """A caller let in to a service: the service as the chosen variant serves it, the
    caller's quota for this request, and the shadow that sees the request too, if any."""

    service: Service
    quota: Quota
    variant: str | None = None
    shadow: Shadow | None = None
    ctx: RequestContext | None = None
    variants: Variants | None = None

    def model(self, name: str, version: str | None) -> dict[str, Any]:
        """``model`` of a JSON answer: the model's name and version, and the variant."""
        return {"name": name, "version": version, "variant": self.variant}

    def run(self, call: UseCase) -> Any:
        """The use case on the chosen variant, with the shadow beside it when one is due;
        the shadow's outcome and the comparison go to the request context."""
        try:
            return run_with_shadow(self.service, self.quota, self.shadow, call, self._shadowed)
        except BackendUnavailable:
            if self.variants is not None and self.variant is not None:
                self.variants.readiness.mark(self.variant, False)  # its share goes elsewhere
            raise

    def _shadowed(self, outcome: dict[str, Any], shadow_result: Any, result: Any) -> None:
        ctx = self.ctx
        if ctx is None:
            return
        ctx.shadow = outcome
        if result is None:  # the primary failed: nothing to compare
            return
        try:
            compared = None
            if shadow_result is not None:
                compared = self.service.kind.compare(result, shadow_result, self.service.config)
            ctx.comparison = {
                "kind": self.service.config.kind,
                "compares": self.service.kind.compares,
                "primary": {
                    "variant": self.variant,
                    "model": getattr(result.facts, "backend_model", None),
                    "version": getattr(result.facts, "backend_version", None),
                },
                "shadow": dict(outcome),
                **(compared or {}),
            }
        except Exception:  # a comparison's fault never reaches the caller
            logs.error(ctx, "shadow comparison failed", traceback.format_exc())


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


def admit(
    gw: Gateway, request: Any, ctx: RequestContext, name: str | None, pins: Any = None
) -> Admitted:
    """Who is calling and may they use this service; then usage recording starts, and the
    variant that serves the caller is chosen (``pins``: a version or label asked for, which
    no shadow sees)."""
    ctx.service = _service_name(gw, name)
    gw.auth.authenticate(request, ctx)
    svc = gw.services.get(ctx.service)
    gw.auth.authorize(ctx, svc.config)
    gw.usage.begin(ctx)
    variants = gw.services.variants(ctx.service)
    principal = ctx.principal if ctx.auth_method != "none" else None  # none: per request
    chosen, shadowing = variants.choose(principal, ctx.request_id)
    ctx.variant = chosen.name
    shadow = None
    if shadowing is not None and svc.config.shadow is not None and pins is None:
        shadow = Shadow(shadowing.name, shadowing.service, svc.config.shadow.max_wait_ms)
    return Admitted(
        chosen.service,
        lambda images: gw.usage.check_quota(ctx, images),
        variant=chosen.name,
        shadow=shadow,
        ctx=ctx,
        variants=variants,
    )


def served_by(ctx: RequestContext) -> str | None:
    """``X-Served-By``: the variant that served the request, then the model's name and
    version when known (``canary; model=eos; version=2``); None before one was chosen."""
    if ctx.variant is None:
        return None
    parts = [ctx.variant]
    if ctx.backend_model:
        parts.append(f"model={ctx.backend_model}")
    if ctx.backend_version:
        parts.append(f"version={ctx.backend_version}")
    return "; ".join(parts)


def serve_model_route(
    gw: Gateway,
    request: Any,
    ctx: RequestContext,
    handler: Callable[..., Served],
    params: dict[str, Any],
) -> Response:
    """Admit, run the handler, and keep what its use case learnt, failed or not."""
    params = dict(params)
    pins = (params.get("version"), params.get("label"))
    pinned = pins if any(pins) else None
    admitted = admit(gw, request, ctx, params.pop("service", None), pinned)
    try:
        served = handler(gw, request, ctx, admitted, **params)
    except GatewayError as exc:
        if isinstance(exc.facts, Facts):
            ctx.record(exc.facts)
        raise
    if served.facts is not None:
        served.facts.variant = admitted.variant
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
