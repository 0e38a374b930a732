"""The hidden TF Serving model, reached over its REST API.

One pooled keep-alive connection pool per backend, tiles sent in parallel requests of up
to ``max_batch`` tiles each, and one deadline (``timeout_s``) for the whole exchange of a
request, retries included.  Only failures that cannot have been processed are retried:
connection refused or reset, 503 and 429.  A tile that fails fails its whole slide.
"""

from __future__ import annotations

import copy
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urlsplit

from gateway.backends import tfserving_wire as wire
from gateway.backends.base import BackendResult, Readiness, TileDetections, TileInput
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
        detail = wire.backend_error_message(resp.data)
        pinned = self._pin_error(resp, detail)
        if pinned is not None:
            return pinned
        status = resp.status
        if status in (429, 503):
            return BackendUnavailable(
                f"the model is unavailable or overloaded ({status}: {detail})"
            )
        if status == 404:
            return BackendUnavailable(
                f"the model {self.service.backend.model!r} is not available on its server "
                f"({detail})",
                code="model_not_available",
            )
        if status == 504:
            return BackendTimeout(f"the model server timed out ({detail})")
        if status == 400:
            return BackendBadResponse(
                f"the model rejected a tile ({detail})", code="backend_rejected"
            )
        return BackendBadResponse(f"the model failed with HTTP {status} ({detail})")

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
            )
        ok, version, detail = wire.model_status(resp.data)
        if ok:
            self._version = version
            self._version_checked = time.monotonic()
        return Readiness(ok, detail, model, version)
