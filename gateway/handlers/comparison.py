"""``GET /v1/services/{service}/comparison``: the agreement of two variants of a service's
model, the figures ``python -m gateway compare`` prints, for a caller allowed to use the
service.  Query parameters as the command line's options: ``since`` (``7d`` or
``YYYY-MM-DD``), ``variant`` (twice: the reference, then the one compared with it) and
``cutoff``."""

from __future__ import annotations

import math
from typing import Any

from flask import Response

from gateway.context import RequestContext
from gateway.errors import BadRequest, GatewayError, NotFound
from gateway.handlers.responses import json_response
from gateway.runtime import Gateway
from gateway.usage.comparison import DEFAULT_CUTOFF, compare, since_day


def _query(request: Any) -> tuple[str | None, tuple[str, str] | None, float]:
    args = request.args
    try:
        since = since_day(args["since"]) if args.get("since") else None
    except ValueError as exc:
        raise BadRequest(str(exc).replace("--since", "since")) from None
    variants = args.getlist("variant")
    if len(variants) not in (0, 2) or (variants and variants[0] == variants[1]):
        raise BadRequest("variant is given twice, with two different variants, or not at all")
    try:
        cutoff = float(args.get("cutoff", DEFAULT_CUTOFF))
        if not math.isfinite(cutoff):
            raise ValueError
    except ValueError:
        raise BadRequest(f"cutoff must be a number, got {args.get('cutoff')!r}") from None
    return since, ((variants[0], variants[1]) if variants else None), cutoff


def comparison(gw: Gateway, request: Any, ctx: RequestContext, service: str) -> Response:
    ctx.service = service
    gw.auth.authenticate(request, ctx)
    svc = gw.services.get(service)  # UnknownService: 404
    gw.auth.authorize(ctx, svc.config)
    since, variants, cutoff = _query(request)
    store = getattr(gw.usage, "store", None)
    if store is None:
        raise NotFound("usage recording is off (usage.enabled: false): nothing was compared")
    try:
        found = compare(store.comparisons(service, since), service, variants, cutoff, since)
    except Exception as exc:
        raise GatewayError(
            "the usage store cannot be read now; try again later",
            status=503,
            code="store_unavailable",
            detail=f"{type(exc).__name__}: {exc}",
        ) from exc
    return json_response(200, found.report)
