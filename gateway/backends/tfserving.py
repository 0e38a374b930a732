"""The hidden TF Serving model, reached over its REST API.

One pooled keep-alive connection pool per backend, tiles sent in parallel requests of up
to ``max_batch`` tiles each, and one deadline (``timeout_s``) for the whole exchange of a
request, retries included.  Only failures that cannot have been processed are retried:
connection refused or reset, 503 and 429.  A tile that fails fails its whole slide.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlsplit

from gateway.backends.base import BackendResult, Readiness, TileInput
from gateway.backends.http_pool import ConnectFailed, Disconnected, HostPool, Response, TimedOut
from gateway.codecs import tfserving as wire
from gateway.codecs.jsonio import b64encode
from gateway.config import ServiceConfig
from gateway.errors import (
    BackendBadResponse,
    BackendTimeout,
    BackendUnavailable,
    GatewayError,
)
from gateway.pipeline.merge import TileDetections

RETRY_STATUSES = {429, 503}
BACKOFF_S = 0.05
STATUS_TTL_S = 300.0
PROBE_TIMEOUT_S = 0.25  # a refused or silent port while the server is known to be down


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class _Retryable(Exception):
    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


class TFServingBackend:
    wants_encoded = True

    def __init__(self, service: ServiceConfig) -> None:
        self.service = service
        cfg = service.backend
        assert cfg.url
        self.predict_url = f"{cfg.url}/v1/models/{cfg.model}:predict"
        self.status_url = f"{cfg.url}/v1/models/{cfg.model}"
        self.pool = HostPool(cfg.url, maxsize=max(cfg.max_parallel, 4))
        self._paths = {url: _path_of(url) for url in (self.predict_url, self.status_url)}
        self.executor = ThreadPoolExecutor(
            max_workers=max(cfg.max_parallel, 2), thread_name_prefix=f"backend-{service.name}"
        )
        self.labels = service.labels
        self._version: str | None = None
        self._version_checked = 0.0
        self._lock = threading.Lock()
        self._address = (self.pool.host, self.pool.port)
        self._refused = False  # the last connection attempt was refused: the server is down
        self._token_source = None
        if cfg.auth == "google-id-token":
            from gateway.auth.outbound import IdTokenSource

            self._token_source = IdTokenSource(cfg.url, cfg.credentials_file)

    # -- HTTP ------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._token_source is not None:
            headers["Authorization"] = self._token_source.authorization_header()
        return headers

    def _remaining(self, deadline: float) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BackendTimeout(self._timeout_message())
        return remaining

    def _timeout_message(self) -> str:
        return f"the model did not answer within {self.service.backend.timeout_s:g} s"

    def _call(self, method: str, url: str, body: bytes | None, deadline: float) -> Response:
        remaining = self._remaining(deadline)
        path = self._paths.get(url) or _path_of(url)
        try:
            return self.pool.request(
                method, path, body, self._headers(), min(remaining, 5.0), remaining
            )
        except ConnectFailed as exc:
            self._refused = True
            raise _Retryable(BackendUnavailable("the model server is unreachable")) from exc
        except Disconnected as exc:
            raise _Retryable(BackendUnavailable("the model server is unreachable")) from exc
        except TimedOut as exc:
            raise BackendTimeout(self._timeout_message()) from exc

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

    def _with_retries(self, method: str, url: str, body: bytes | None, deadline: float):
        attempts = self.service.backend.retries + 1
        for attempt in range(attempts):
            try:
                resp = self._call(method, url, body, deadline)
            except _Retryable as exc:
                error = exc.error
            else:
                if resp.status not in RETRY_STATUSES:
                    return resp
                error = self._status_error(resp)
            if attempt + 1 == attempts:
                raise error
            pause = BACKOFF_S * (2**attempt) * (0.5 + random.random())
            if time.monotonic() + pause >= deadline:
                raise error
            time.sleep(pause)
        raise AssertionError("unreachable")

    def _status_error(self, resp) -> GatewayError:
        """The failure in the gateway's words; the model server's text is only logged."""
        status = resp.status
        detail = f"HTTP {status}: {resp.data[:4096].decode('utf-8', 'replace')}"
        if status in (429, 503):
            return BackendUnavailable(
                f"the model is unavailable or overloaded (HTTP {status})", detail=detail
            )
        if status == 404:
            return BackendUnavailable(
                f"the model of service {self.service.name!r} is not available on its server",
                code="model_not_available",
                detail=detail,
            )
        if status == 504:
            return BackendTimeout("the model server timed out", detail=detail)
        if status == 400:
            return BackendBadResponse(
                "the model rejected a tile", code="backend_rejected", detail=detail
            )
        return BackendBadResponse(f"the model failed with HTTP {status}", detail=detail)

    # -- Backend ---------------------------------------------------------------------------

    @staticmethod
    def _batch_body(batch: list[TileInput]) -> bytes:
        return wire.backend_request(
            [b64encode(t.encoded or b"") for t in batch], [f"tile-{t.index}" for t in batch]
        )

    def _predict_batch(
        self, batch: list[TileInput], deadline: float, table: wire.LabelTable
    ) -> list[TileDetections]:
        sizes = [(t.width, t.height) for t in batch]
        return self._send_batch(self._batch_body(batch), sizes, deadline, table)

    def _send_batch(
        self,
        body: bytes,
        sizes: list[tuple[int, int]],
        deadline: float,
        table: wire.LabelTable,
    ) -> list[TileDetections]:
        resp = self._with_retries("POST", self.predict_url, body, deadline)
        del body  # megabytes of base64, not needed while the answer is parsed
        if resp.status != 200:
            raise self._status_error(resp)
        with self._lock:  # the label table is shared by the batches of one request
            return wire.parse_backend_predictions(resp.data, len(sizes), sizes, table)

    def predict(
        self, tiles: list[TileInput], deadline: float, slide_pixels: object = None
    ) -> BackendResult:
        started = time.perf_counter()
        size = self.service.backend.max_batch
        batches = [tiles[i : i + size] for i in range(0, len(tiles), size)]
        table = wire.LabelTable(self.labels)
        status_future = self._start_version_refresh(deadline)
        if len(batches) == 1:
            results = [self._predict_batch(batches[0], deadline, table)]
        else:
            futures = [
                self.executor.submit(self._predict_batch, b, deadline, table) for b in batches
            ]
            results = self._wait_all(futures, deadline)
        return self._result(results, table, status_future, deadline, started, len(batches))

    def predict_groups(
        self,
        groups: Sequence[Callable[[], list[TileInput] | None]],
        deadline: float,
        parallel: bool,
    ) -> BackendResult | None:
        """Tiles made group by group, each group's batches sent as soon as it is made.

        A JPEG is cut one band of tile rows at a time (:mod:`gateway.pipeline.slide`):
        with ``parallel`` the bands are cut at once in this thread and the pool's (the
        cut releases the GIL), else one after the other, so only one band's cut is in
        memory.  Either way the model is already working on the first tiles while the
        rest are cut.  ``None`` when a group cannot be made (the caller decodes instead).
        """
        started = time.perf_counter()
        size = self.service.backend.max_batch
        table = wire.LabelTable(self.labels)
        status_future = self._start_version_refresh(deadline)

        def make(group: Callable[[], list[TileInput] | None]) -> list[Future] | None:
            tiles = group()
            if tiles is None:
                return None
            sends = []
            for i in range(0, len(tiles), size):
                batch = tiles[i : i + size]
                body, sizes = self._batch_body(batch), [(t.width, t.height) for t in batch]
                sends.append(self.executor.submit(self._send_batch, body, sizes, deadline, table))
            return sends

        made: list[Future] = []
        sends: list[Future] = []
        try:
            if parallel:
                made = [self.executor.submit(make, g) for g in groups[1:]]
                first = make(groups[0])
                parts = [first, *self._wait_all(made, deadline)]
            else:
                parts = []
                for g in groups:
                    parts.append(make(g))
                    if parts[-1] is None:
                        break
            for part in parts:
                sends += part or []
            if any(part is None for part in parts):
                return None
            results = self._wait_all(sends, deadline)
        finally:
            for f in made + sends:
                f.cancel()
        return self._result(results, table, status_future, deadline, started, len(sends))

    def _start_version_refresh(self, deadline: float) -> Future | None:
        if self._version is None and time.monotonic() - self._version_checked > 30:
            return self.executor.submit(self._refresh_version, deadline)
        return None

    def _wait_all(self, futures: list[Future], deadline: float) -> list:
        results = []
        try:
            for f in futures:
                # One cut-off for all batches: a grace per batch would add up.
                results.append(f.result(timeout=max(deadline + 0.25 - time.monotonic(), 0)))
        except TimeoutError as exc:
            raise BackendTimeout(self._timeout_message()) from exc
        finally:
            for f in futures:
                f.cancel()
        return results

    def _result(
        self,
        results: list[list[TileDetections]],
        table: wire.LabelTable,
        status_future: Future | None,
        deadline: float,
        started: float,
        calls: int,
    ) -> BackendResult:
        if status_future is not None:
            try:
                status_future.result(timeout=max(min(deadline - time.monotonic(), 0.5), 0))
            except Exception:
                pass
        per_tile = [d for batch in results for d in batch]
        return BackendResult(
            tiles=per_tile,
            labels=tuple(table.labels),
            class_values=tuple(table.values),
            model=self.service.backend.model,
            version=self._version,
            backend_ms=(time.perf_counter() - started) * 1000.0,
            calls=calls,
        )

    def _refresh_version(self, deadline: float) -> None:
        self._version_checked = time.monotonic()
        try:
            self.readiness(deadline=min(deadline, time.monotonic() + 2.0))
        except Exception:
            pass

    def readiness(self, deadline: float | None = None) -> Readiness:
        model = self.service.backend.model
        deadline = deadline or time.monotonic() + min(self.service.backend.timeout_s, 5.0)
        try:
            resp = self._call("GET", self.status_url, None, deadline)
        except _Retryable as exc:
            return Readiness(False, exc.error.message, model)
        except GatewayError as exc:
            return Readiness(False, exc.message, model)
        if resp.status != 200:
            return Readiness(
                False, f"HTTP {resp.status}: {wire.backend_error_message(resp.data)}", model
            )  # the model server's text: for logs only (gateway/handlers/health.py)
        ok, version, detail = wire.model_status(resp.data)
        if ok:
            self._version = version
            self._version_checked = time.monotonic()
        return Readiness(ok, detail, model, version)
