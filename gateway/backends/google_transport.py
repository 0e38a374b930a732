"""google-auth's HTTP transport over the gateway's own client (:mod:`gateway.backends.http_pool`).

google-auth calls out through a ``google.auth.transport.Request``: to the metadata server,
to token endpoints, to whatever ``token_uri`` a key file names.  Its stock adapters bring
requests or urllib3; this one keeps a keep-alive pool per origin on ``http.client``, so the
gateway has one HTTP stack.  The module imports ``google.auth`` and is itself imported only
where tokens are used, never on a cold start that needs none.
"""

from __future__ import annotations

from typing import Any

from google.auth import exceptions, transport

from gateway.backends.http_pool import OriginPools
from gateway.backends.http_pool import Response as PoolResponse

DEFAULT_TIMEOUT_S = 120.0  # google-auth's own default for its requests transport


class Response(transport.Response):
    """An answer as google-auth reads it; ``headers.get`` ignores case."""

    def __init__(self, answer: PoolResponse) -> None:
        self._answer = answer

    @property
    def status(self) -> int:
        return self._answer.status

    @property
    def headers(self) -> Any:
        return self._answer.headers

    @property
    def data(self) -> bytes:
        return self._answer.data


class Request(transport.Request):
    """Calls google-auth makes, on pools kept per origin; safe to share between threads.

    Every failure to get an answer is a ``google.auth.exceptions.TransportError``: google-auth
    retries those where it retries at all (the metadata server's ping) and reports the rest.
    """

    def __init__(self, pools: OriginPools | None = None) -> None:
        self.pools = pools or OriginPools(maxsize=2)

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | str | None = None,
        headers: Any = None,
        timeout: float | tuple[float, float] | None = None,
        **kwargs: Any,
    ) -> Response:
        connect_s, read_s = _timeouts(timeout)
        if isinstance(body, str):
            body = body.encode("utf-8")
        try:
            answer = self.pools.request(
                method,
                url,
                body,
                dict(headers or {}),
                connect_timeout=connect_s,
                read_timeout=read_s,
            )
        except (OSError, ValueError) as exc:  # the pool's failures, a malformed URL
            raise exceptions.TransportError(f"{method} {url}: {exc}") from exc
        return Response(answer)


def _timeouts(timeout: float | tuple[float, float] | None) -> tuple[float, float]:
    """(connect, read) seconds from google-auth's ``timeout``: None, seconds (both), or a pair,
    as its requests transport reads it."""
    if timeout is None:
        timeout = DEFAULT_TIMEOUT_S
    if isinstance(timeout, tuple):
        connect_s, read_s = timeout
        return float(connect_s), float(read_s)
    return float(timeout), float(timeout)
