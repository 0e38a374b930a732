"""CORS for the web app: only configured origins are echoed back.

The gateway authenticates with headers (``Authorization``, ``X-API-Key``), never cookies,
so no ``Access-Control-Allow-Credentials`` is sent.  Preflights are answered without
authentication because browsers send them without credentials; an origin that is not
configured gets a 204 without CORS headers, which the browser treats as a refusal.
"""

from __future__ import annotations

from typing import Any

from gateway.config import Config, ConfigError
from gateway.schema import STRING, Fields, ListOf

ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Authorization, X-API-Key, Content-Type"
EXPOSE_HEADERS = "X-Request-Id, X-Detections-Count, X-Served-By, Retry-After"
MAX_AGE_S = 3600

CONFIG_SCHEMA = Fields({"origins": ListOf(STRING)})  # the ``cors`` section


class Cors:
    def __init__(self, config: Config) -> None:
        origins = config.cors.get("origins") or []
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            raise ConfigError("cors.origins must be a list of origins like https://app.example")
        self.any_origin = "*" in origins
        self.origins = frozenset(o.rstrip("/") for o in origins if o != "*")

    def allowed(self, origin: str) -> bool:
        return bool(origin) and (self.any_origin or origin.rstrip("/") in self.origins)

    def headers(self, request: Any) -> dict[str, str]:
        """Headers for every non-preflight response."""
        origin = request.headers.get("Origin") or ""
        out: dict[str, str] = {}
        if self.any_origin or self.origins:
            out["Vary"] = "Origin"  # the answer differs per origin: shared caches must know
        if self.allowed(origin):
            out["Access-Control-Allow-Origin"] = origin.rstrip("/")
            out["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        return out

    def preflight(self, request: Any) -> tuple[int, dict[str, str]]:
        """Status and headers for an ``OPTIONS`` request, whatever the path."""
        headers = self.headers(request)
        if "Access-Control-Allow-Origin" in headers:
            headers.update(
                {
                    "Access-Control-Allow-Methods": ALLOW_METHODS,
                    "Access-Control-Allow-Headers": ALLOW_HEADERS,
                    "Access-Control-Max-Age": str(MAX_AGE_S),
                }
            )
        return 204, headers
