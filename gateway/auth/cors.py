"""CORS for the web app: only configured origins are echoed back."""

from __future__ import annotations

from typing import Any

from gateway.config import Config


class Cors:
    def __init__(self, config: Config) -> None:
        origins = config.cors.get("origins") or []
        self.origins = frozenset(str(o).rstrip("/") for o in origins)

    def headers(self, request: Any) -> dict[str, str]:
        origin = (request.headers.get("Origin") or "").rstrip("/")
        if origin and origin in self.origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {}

    def preflight(self, request: Any) -> tuple[int, dict[str, str]]:
        headers = self.headers(request)
        if headers:
            headers.update(
                {
                    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                    "Access-Control-Allow-Headers": "Authorization, X-API-Key, Content-Type",
                    "Access-Control-Max-Age": "3600",
                }
            )
        return 204, headers
