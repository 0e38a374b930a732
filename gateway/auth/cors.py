"""CORS for the web app: only configured origins are echoed back.

The gateway authenticates with headers (``Authorization``, ``X-API-Key``), never cookies,
so no ``Access-Control-Allow-Credentials`` is sent.  Preflights are answered without
authentication because browsers send them without credentials; an origin that is not
configured gets a 204 without CORS headers, which the browser treats as a refusal.

Without a ``cors`` section, off Google Cloud, a web app's development server on this
machine (``localhost``, ``127.0.0.1`` or ``[::1]``, any port) may call the gateway, so
the README's first command serves a web app under development as it is.  On Google Cloud
only the configured origins are ever allowed: a deployment never trusts "local" pages.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from gateway import logs
from gateway.config import Config, ConfigError, on_google_cloud
from gateway.schema import STRING, Fields, ListOf

ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Authorization, X-API-Key, Content-Type"
EXPOSE_HEADERS = "X-Request-Id, X-Detections-Count, Retry-After, RateLimit-Policy, RateLimit"
MAX_AGE_S = 3600
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
LOCAL_NOTICE = (
    "cors: no 'cors' section: web pages on localhost, 127.0.0.1 and [::1] (any port) may "
    "call the gateway (local default; on Google Cloud only cors.origins are allowed)"
)

CONFIG_SCHEMA = Fields({"origins": ListOf(STRING)})  # the ``cors`` section

_announced: set[str] = set()


def is_local_origin(origin: str) -> bool:
    """An ``http(s)`` origin on this machine's loopback names, whatever its port."""
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 (raises ValueError on a malformed port)
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and "@" not in parts.netloc
        and parts.hostname in LOCAL_HOSTS
        and parts.path in ("", "/")
        and not parts.query
        and not parts.fragment
    )


class Cors:
    def __init__(self, config: Config) -> None:
        origins = config.cors.get("origins") or []
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            raise ConfigError("cors.origins must be a list of origins like https://app.example")
        self.any_origin = "*" in origins
        self.origins = frozenset(o.rstrip("/") for o in origins if o != "*")
        # A written section, even an empty one, is the whole list of origins.
        self.local = config.raw.get("cors") is None and not on_google_cloud()
        if self.local and LOCAL_NOTICE not in _announced:
            _announced.add(LOCAL_NOTICE)
            logs.emit("INFO", LOCAL_NOTICE)

    @property
    def serves_browsers(self) -> bool:
        """Whether any page on another origin may call this gateway."""
        return self.any_origin or bool(self.origins) or self.local

    def allowed(self, origin: str) -> bool:
        if not origin:
            return False
        return (
            self.any_origin
            or origin.rstrip("/") in self.origins
            or (self.local and is_local_origin(origin))
        )

    def headers(self, request: Any) -> dict[str, str]:
        """Headers for every non-preflight response."""
        origin = request.headers.get("Origin") or ""
        out: dict[str, str] = {}
        if self.serves_browsers:
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
