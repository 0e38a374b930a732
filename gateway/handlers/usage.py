"""``GET /v1/usage``: a caller's own usage of the current UTC day and what is left of its
quotas.

Credentialed as the model routes are (the same credentials, the same principal), but not
a model route: it is not recorded and takes nothing from the caller's request rate, so
asking how much is left never uses any of it.  Anyone may ask, for themselves only.
"""

from __future__ import annotations

from typing import Any

from flask import Response

from gateway.context import RequestContext
from gateway.errors import GatewayError, NotFound
from gateway.handlers.responses import json_response
from gateway.runtime import Gateway

COUNTS = ("requests", "images", "counted", "raw_detections", "errors")


def _counts(counters: dict[str, int]) -> dict[str, int]:
    return {name: int(counters.get(name) or 0) for name in COUNTS}


def today(gw: Gateway, request: Any, ctx: RequestContext) -> Response:
    gw.auth.authenticate(request, ctx)
    usage = gw.usage
    if not hasattr(usage, "today"):
        raise NotFound(
            "this gateway keeps no usage records (usage.enabled: false)", code="usage_not_recorded"
        )
    from gateway.usage.ratelimit import DAILY, MINUTE, headers
    from gateway.usage.stores import StoreUnavailable

    try:
        found = usage.today(ctx.principal)
        states = usage.limits(ctx.principal, images_used=found["total"]["images"], fresh=True)
    except StoreUnavailable as exc:
        raise GatewayError(
            "usage records cannot be read right now; try again shortly",
            status=503,
            code="usage_unavailable",
            headers={"Retry-After": "5"},
            detail=str(exc),
        ) from exc
    by_name = {s.name: s for s in states}
    daily, minute = by_name.get(DAILY), by_name.get(MINUTE)
    body = {
        "principal": ctx.principal,
        "day": found["day"],
        "usage": _counts(found["total"]),
        "services": {name: _counts(c) for name, c in found["services"].items()},
        "quota": {
            "daily_images": {
                "limit": daily.quota if daily else None,
                "used": found["total"]["images"],
                "remaining": daily.remaining if daily else None,
                "reset_s": daily.reset_s if daily else None,
            },
            "requests_per_minute": minute.to_json() if minute else
            {"limit": None, "remaining": None, "reset_s": None},
        },
        "request_id": ctx.request_id,
    }  # fmt: skip
    return json_response(200, body, headers(states))
