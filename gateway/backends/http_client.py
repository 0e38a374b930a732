"""The one HTTP client every outbound protocol uses to reach its model server.

One keep-alive pool per backend, one thread pool for its parallel requests, and one
deadline (``timeout_s``) for the whole exchange of a request, retries included.  Only
failures that cannot have been processed are retried: connection refused or reset, 503
and 429.  A body that fails fails the whole exchange.  The protocol adapters
(:mod:`gateway.backends.tfserving`, :mod:`gateway.backends.v2`) say what to send and how
to read the answer; this module says how it travels.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, TypeVar

from gateway.backends.http_pool import (
    ConnectFailed,
    Disconnected,
    HostPool,
    Response,
    TimedOut,
    TooLarge,
)
from gateway.config import BackendConfig
from gateway.errors import (
    BackendBadResponse,
    BackendTimeout,
    BackendUnavailable,
    GatewayError,
)

RETRY_STATUSES = frozenset({429, 503})
BACKOFF_S = 0.05
PROBE_TIMEOUT_S = 0.25  # a refused or silent port while the server is known to be down

T = TypeVar("T")
R = TypeVar("R")


class TokenSource(Protocol):
    """What signs a model server's requests (:mod:`gateway.backends.credentials`)."""

    def authorization_header(self) -> str: ...


class Retryable(Exception):
    """A failure after which the request cannot have been processed: safe to send again."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


def status_error(service: str, status: int, detail: str, what: str = "a tile") -> GatewayError:
    """A model server's failure in the gateway's words; ``detail`` (its own text) is only
    logged, never answered."""
    if status in RETRY_STATUSES:
        return BackendUnavailable(
            f"the model is unavailable or overloaded (HTTP {status})", detail=detail
        )
    if status == 404:
        return BackendUnavailable(
            f"the model of service {service!r} is not available on its server",
            code="model_not_available",
            detail=detail,
        )
    if status == 504:
        return BackendTimeout("the model server timed out", detail=detail)
    if status == 400:
        return BackendBadResponse(
            f"the model rejected {what}", code="backend_rejected", detail=detail
        )
    return BackendBadResponse(f"the model failed with HTTP {status}", detail=detail)


class ModelHttpClient:
    """HTTP to one model server under a request's deadline, with retries and a breaker."""

    def __init__(
        self, service: str, backend: BackendConfig, token_source: TokenSource | None = None
    ) -> None:
        """``token_source``: what signs the requests when the protocol decides it (Vertex AI's
        access tokens); else ``backend.auth`` does."""
        assert backend.url
        self.service, self.config = service, backend
        self.pool = HostPool(backend.url, maxsize=max(backend.max_parallel, 4))
        self.executor = ThreadPoolExecutor(
            max_workers=max(backend.max_parallel, 2), thread_name_prefix=f"backend-{service}"
        )
        self._address = (self.pool.host, self.pool.port)
        self._refused = False  # the last connection attempt was refused: the server is down
        self._token_source: TokenSource | None = token_source
        if token_source is None and backend.auth == "google-id-token":
            from gateway.backends.credentials import IdTokenSource

            self._token_source = IdTokenSource(backend.url, backend.credentials_file)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if extra:
            headers.update(extra)
        if self._token_source is not None:
            headers["Authorization"] = self._token_source.authorization_header()
        return headers

    def timeout_message(self) -> str:
        return f"the model did not answer within {self.config.timeout_s:g} s"

    def remaining(self, deadline: float) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BackendTimeout(self.timeout_message())
        return remaining

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None,
        deadline: float,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """One attempt; a failure that is safe to retry raises :class:`Retryable`."""
        remaining = self.remaining(deadline)
        limit = int(self.config.max_answer_mb * 1024 * 1024)
        try:
            resp = self.pool.request(
                method,
                path,
                body,
                self.headers(headers),
                min(remaining, 5.0),
                remaining,
                max_bytes=limit,
                deadline=deadline,
            )
        except TooLarge as exc:
            raise BackendBadResponse(
                f"the model's answer is larger than backend.max_answer_mb "
                f"({self.config.max_answer_mb:g} MB)",
                detail=str(exc),
            ) from exc
        except ConnectFailed as exc:
            self._refused = True
            raise Retryable(BackendUnavailable("the model server is unreachable")) from exc
        except Disconnected as exc:
            raise Retryable(BackendUnavailable("the model server is unreachable")) from exc
        except TimedOut as exc:
            raise BackendTimeout(self.timeout_message()) from exc
        if resp.status < 200 or 300 <= resp.status < 400:
            # Not an answer: an interim one, or a redirect (never followed, so a model
            # server cannot send the gateway's requests and credentials elsewhere).
            raise BackendBadResponse(
                f"the model answered HTTP {resp.status}, which is not an answer",
                detail=f"HTTP {resp.status} Location: {resp.headers.get('Location', '')}"[:300],
            )
        return resp

    def probe(self, path: str, deadline: float | None = None) -> Response | GatewayError:
        """One GET for readiness, without retries: the answer, or the failure as an error
        (readiness reports it; it never raises)."""
        deadline = deadline or time.monotonic() + min(self.config.timeout_s, 5.0)
        try:
            return self.call("GET", path, None, deadline)
        except Retryable as exc:
            return exc.error
        except GatewayError as exc:
            return exc

    def ensure_reachable(self, deadline: float) -> None:
        """While the server is known to be down, answer 503 after one TCP connect instead of
        after decoding, tiling and retrying a slide; the first connect that succeeds ends it."""
        if not self._refused:
            return
        timeout = max(min(PROBE_TIMEOUT_S, deadline - time.monotonic()), 0.01)
        try:
            socket.create_connection(self._address, timeout=timeout).close()
        except OSError as exc:
            raise BackendUnavailable("the model server is unreachable") from exc
        self._refused = False

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        deadline: float,
        headers: dict[str, str] | None = None,
        on_status: Callable[[Response], GatewayError] | None = None,
    ) -> Response:
        """The answer after the retries; a 429/503 on the last attempt raises the error
        ``on_status`` makes of it."""
        attempts = self.config.retries + 1
        for attempt in range(attempts):
            try:
                resp = self.call(method, path, body, deadline, headers)
            except Retryable as exc:
                error = exc.error
            else:
                if resp.status not in RETRY_STATUSES:
                    return resp
                error = (on_status or self._status_error)(resp)
            if attempt + 1 == attempts:
                raise error
            pause = BACKOFF_S * (2**attempt) * (0.5 + random.random())
            if time.monotonic() + pause >= deadline:
                raise error
            time.sleep(pause)
        raise AssertionError("unreachable")

    def _status_error(self, resp: Response) -> GatewayError:
        detail = f"HTTP {resp.status}: {resp.data[:4096].decode('utf-8', 'replace')}"
        return status_error(self.service, resp.status, detail)

    def exchange(
        self,
        bodies: Iterable[tuple[bytes, T]],
        deadline: float,
        post: Callable[[bytes], bytes],
        read: Callable[[bytes, T], R],
    ) -> list[R]:
        """Each body sent as soon as the stream gives it, up to ``max_parallel`` at once.

        The stream is made in this thread (a JPEG's next band is cut while the model works
        on the first), the answers read in the pool as they come; their order is the
        stream's.  A failure of any body fails the whole exchange.
        """

        def one(body: bytes, meta: T) -> R:
            return read(post(body), meta)

        sends: list[Future] = []
        try:
            for body, meta in bodies:
                self.remaining(deadline)
                sends.append(self.executor.submit(one, body, meta))
                del body
            return self.wait_all(sends, deadline)
        finally:
            for f in sends:
                f.cancel()

    def wait_all(self, futures: list[Future], deadline: float) -> list:
        results = []
        try:
            for f in futures:
                # One cut-off for all batches: a grace per batch would add up.
                results.append(f.result(timeout=max(deadline + 0.25 - time.monotonic(), 0)))
        except TimeoutError as exc:
            raise BackendTimeout(self.timeout_message()) from exc
        finally:
            for f in futures:
                f.cancel()
        return results
