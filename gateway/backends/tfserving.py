"""A hidden TF Serving model, reached over its REST API.

One pooled keep-alive connection pool per backend, payloads sent in parallel requests of
up to ``max_batch`` tiles or images each, and one deadline (``timeout_s``) for the whole
exchange of a request, retries included.  Only failures that cannot have been processed
are retried: connection refused or reset, 503 and 429.  A tile that fails fails its whole
slide.  The same backend serves each kind of service: ``predict`` (a detector's tiles),
``classify`` (whole images) and ``forward`` (a body passed through unchanged).
"""

from __future__ import annotations

import copy
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from gateway.backends import tfserving_wire as wire
from gateway.backends.base import (
    BackendResult,
    Classification,
    ClassifyResult,
    Forwarded,
    ImageInput,
    Readiness,
    TileDetections,
    TileInput,
)
from gateway.backends.http_pool import ConnectFailed, Disconnected, HostPool, Response, TimedOut
from gateway.config import ServiceConfig
from gateway.errors import (
    BackendBadResponse,
    BackendTimeout,
    BackendUnavailable,
    GatewayError,
    UnknownLabel,
    UnknownVersion,
)
from gateway.jsonio import b64encode

RETRY_STATUSES = {429, 503}
BACKOFF_S = 0.05
PROBE_TIMEOUT_S = 0.25  # a refused or silent port while the server is known to be down

T = TypeVar("T")
R = TypeVar("R")


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
        self._pin: tuple[str | None, str | None] = (None, None)  # (version, label)
        self._token_source = None
        if cfg.auth == "google-id-token":
            from gateway.backends.credentials import IdTokenSource

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

    def _pin_error(self, resp: Response, detail: str) -> GatewayError | None:
        """The model server's refusal of a pinned version or label, passed on: TF Serving
        answers NOT_FOUND (404) for a version it does not serve and INVALID_ARGUMENT (400)
        for a label it does not know."""
        version, label = self._pin
        if version is not None and resp.status == 404:
            return UnknownVersion(detail)
        if label is not None and (
            resp.status == 404 or (resp.status == 400 and "label" in detail.lower())
        ):
            return UnknownLabel(detail, status=resp.status)
        return None

    def _status_error(self, resp) -> GatewayError:
        """The failure in the gateway's words; the model server's text is only logged.

        The one exception is TF Serving's refusal of a pinned version or label on
        ``:predict``, an authenticated route: a TF Serving client expects its text."""
        pinned = self._pin_error(resp, wire.backend_error_message(resp.data))
        if pinned is not None:
            return pinned
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

    # -- one stream of bodies under one deadline -------------------------------------------

    def _post(self, body: bytes, deadline: float) -> bytes:
        resp = self._with_retries("POST", self.predict_url, body, deadline)
        del body  # megabytes of base64, not needed while the answer is parsed
        if resp.status != 200:
            raise self._status_error(resp)
        return resp.data

    def _exchange(
        self, bodies: Iterable[tuple[bytes, T]], deadline: float, read: Callable[[bytes, T], R]
    ) -> list[R]:
        """Each body sent as soon as the stream gives it, up to ``max_parallel`` at once.

        The stream is made in this thread (a JPEG's next band is cut while the model works
        on the first), the answers read in the pool as they come; their order is the
        stream's.  A failure of any body fails the whole exchange.
        """

        def send(body: bytes, meta: T) -> R:
            return read(self._post(body, deadline), meta)

        sends: list[Future] = []
        try:
            for body, meta in bodies:
                self._remaining(deadline)
                sends.append(self.executor.submit(send, body, meta))
                del body
            return self._wait_all(sends, deadline)
        finally:
            for f in sends:
                f.cancel()

    # -- Detector ----------------------------------------------------------------------------

    def predict(
        self,
        tiles: Iterable[Sequence[TileInput]],
        deadline: float,
        slide_pixels: object = None,
    ) -> BackendResult:
        started = time.perf_counter()
        size = self.service.backend.max_batch
        table = wire.LabelTable(self.labels)
        status_future = self._start_version_refresh(deadline)

        def bodies() -> Iterator[tuple[bytes, list[tuple[int, int]]]]:
            for group in tiles:
                for i in range(0, len(group), size):
                    batch = group[i : i + size]
                    body = wire.backend_request(
                        [b64encode(t.encoded or b"") for t in batch],
                        [f"tile-{t.index}" for t in batch],
                    )
                    yield body, [(t.width, t.height) for t in batch]
                    body = None
                group = batch = None  # the bodies hold the tiles: not kept while the next is made

        def read(data: bytes, sizes: list[tuple[int, int]]) -> list[TileDetections]:
            with self._lock:  # the label table is shared by the batches of one request
                return wire.parse_backend_predictions(data, len(sizes), sizes, table)

        results = self._exchange(bodies(), deadline, read)
        self._await_version(status_future, deadline)
        return BackendResult(
            tiles=[d for batch in results for d in batch],
            labels=tuple(table.labels),
            class_values=tuple(table.values),
            model=self.service.backend.model,
            version=self._version,
            backend_ms=(time.perf_counter() - started) * 1000.0,
        )

    # -- Classifier --------------------------------------------------------------------------

    def classify(self, images: Sequence[ImageInput], deadline: float) -> ClassifyResult:
        started = time.perf_counter()
        size = self.service.backend.max_batch
        status_future = self._start_version_refresh(deadline)
        bodies = (
            (
                wire.backend_request(
                    [b64encode(img.encoded) for img in images[i : i + size]],
                    [f"image-{i + j}" for j in range(len(images[i : i + size]))],
                ),
                len(images[i : i + size]),
            )
            for i in range(0, len(images), size)
        )
        labels = self.labels

        def read(data: bytes, count: int) -> list[Classification]:
            return wire.parse_classifications(data, count, labels)

        results = self._exchange(bodies, deadline, read)
        self._await_version(status_future, deadline)
        return ClassifyResult(
            predictions=[c for batch in results for c in batch],
            model=self.service.backend.model,
            version=self._version,
            backend_ms=(time.perf_counter() - started) * 1000.0,
        )

    # -- Forwarder ---------------------------------------------------------------------------

    def forward(self, body: bytes, deadline: float) -> Forwarded:
        """The body as the client sent it; a 2xx or 4xx answer comes back as the model gave it.

        A 5xx is the model's failure, not the client's, and becomes the gateway's 502/503/504
        like any backend failure (429 and 503 after the retries as well).
        """
        started = time.perf_counter()
        status_future = self._start_version_refresh(deadline)
        resp = self._with_retries("POST", self.predict_url, body, deadline)
        if resp.status >= 500 or resp.status in RETRY_STATUSES:
            raise self._status_error(resp)
        self._await_version(status_future, deadline)
        return Forwarded(
            status=resp.status,
            body=resp.data,
            model=self.service.backend.model,
            version=self._version,
            backend_ms=(time.perf_counter() - started) * 1000.0,
            error=None if resp.status < 300 else wire.backend_error_message(resp.data),
        )

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

    def _await_version(self, status_future: Future | None, deadline: float) -> None:
        if status_future is not None:
            try:
                status_future.result(timeout=max(min(deadline - time.monotonic(), 0.5), 0))
            except Exception:
                pass

    def _refresh_version(self, deadline: float) -> None:
        self._version_checked = time.monotonic()
        try:
            self.readiness(deadline=min(deadline, time.monotonic() + 2.0))
        except Exception:
            pass

    # -- versions, labels, metadata ----------------------------------------------------------

    def _model_url(self, version: str | None, label: str | None) -> str:
        cfg = self.service.backend
        url = f"{cfg.url}/v1/models/{cfg.model}"
        if version is not None:
            return f"{url}/versions/{version}"
        if label is not None:
            return f"{url}/labels/{quote(label, safe='')}"
        return url

    def pinned(self, version: str | None = None, label: str | None = None) -> TFServingBackend:
        """This backend with its requests sent to one version or label of the model.

        The twin shares the connection pool, the threads and the outbound credentials;
        the model server decides whether the version or label exists.
        """
        if version is None and label is None:
            return self
        twin = copy.copy(self)
        twin._pin = (version, label)
        twin.status_url = self._model_url(version, label)
        twin.predict_url = twin.status_url + ":predict"
        twin._paths = {u: _path_of(u) for u in (twin.predict_url, twin.status_url)}
        twin._version = version  # a label's version is learnt from its status
        twin._version_checked = 0.0
        return twin

    def _get_document(
        self, version: str | None, label: str | None, suffix: str = ""
    ) -> Mapping[str, Any]:
        """A GET on the model server, answered with its own document, or an error that
        says what state the model is in without the model server's words (these routes
        need no credentials)."""
        twin = self.pinned(version, label)
        url = twin.status_url + suffix
        deadline = time.monotonic() + min(self.service.backend.timeout_s, 5.0)
        resp = twin._with_retries("GET", url, None, deadline)
        if resp.status == 200:
            try:
                doc = wire.loads(resp.data)
            except Exception:
                doc = None
            if not isinstance(doc, Mapping):
                raise BackendBadResponse("the model server answered with a body that is not JSON")
            return doc
        pinned = twin._pin_error(resp, wire.backend_error_message(resp.data))
        if isinstance(pinned, UnknownVersion):
            raise UnknownVersion(f"the model server has no version {version} of this model")
        if isinstance(pinned, UnknownLabel):
            raise UnknownLabel(
                f"the model server has no version labelled {label!r}", status=resp.status
            )
        if resp.status == 404:
            raise BackendUnavailable(
                "the model is not available on its server", code="model_not_available"
            )
        raise BackendUnavailable(f"the model server answered HTTP {resp.status}")

    def model_status(self, version: str | None = None, label: str | None = None) -> dict:
        """``GET /v1/models/{model}[/versions/{n}|/labels/{l}]``: the model server's own
        version rows, as TF Serving gives them."""
        doc = self._get_document(version, label)
        rows = doc.get("model_version_status")
        if isinstance(rows, list):
            return {"model_version_status": rows}
        if doc.get("ready") is True and version is None and label is None:
            return {"model_version_status": []}  # a server that names no versions
        raise BackendBadResponse("the model server's status lists no versions")

    def model_metadata(self, version: str | None = None, label: str | None = None) -> dict:
        """``GET /v1/models/{model}[/versions/{n}|/labels/{l}]/metadata``, passed on."""
        doc = self._get_document(version, label, "/metadata")
        if not isinstance(doc.get("metadata"), Mapping):
            raise BackendBadResponse("the model server's metadata has no signature")
        return dict(doc)

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
