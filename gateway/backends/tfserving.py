"""Outbound TF Serving REST (``protocol: tfserving``, the default): a thin adapter over the
shared HTTP client (:mod:`gateway.backends.http_client`).

It says what to send (:mod:`gateway.backends.tfserving_wire`: AutoML Vision Edge rows of
base64 images), how to read the answer, and how TF Serving names versions, labels, status
and metadata.  A request pinned to a version or label is a small view sharing the
connections, the threads and the version cache of the service's backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any
from urllib.parse import quote, urlsplit

from gateway.backends import tfserving_wire as wire
from gateway.backends.base import (
    BackendResult,
    Classification,
    ClassifyResult,
    Forwarded,
    ImageInput,
    OutboundProtocol,
    Readiness,
    TileDetections,
    TileInput,
    not_ready,
    status_reason,
)
from gateway.backends.http_client import (
    RETRY_STATUSES,
    ModelHttpClient,
    status_error,
)
from gateway.backends.http_pool import Response
from gateway.config import ServiceConfig
from gateway.errors import (
    BackendBadResponse,
    BackendUnavailable,
    GatewayError,
    UnknownLabel,
    UnknownVersion,
    echo,
)
from gateway.jsonio import b64encode
from gateway.schema import Fields

VERSION_RECHECK_S = 30.0
# A label's version is learnt from its status once, then again this long after: a label can
# be moved to another version, but a status call per request would double the calls.
LABEL_RECHECK_S = 30.0
MAX_LABELS_KEPT = 32  # labels are the caller's words: the ones past this are not kept


class _Version:
    """The version the model server serves, learnt from its status now and then."""

    def __init__(self) -> None:
        self.value: str | None = None
        self.checked = 0.0
        self.lock = threading.Lock()  # one status call at a time, whatever view asks


class TFServingBackend:
    wants_encoded = True

    def __init__(
        self,
        service: ServiceConfig,
        client: ModelHttpClient | None = None,
        pin: tuple[str | None, str | None] = (None, None),
        label_versions: dict[str, _Version] | None = None,
    ) -> None:
        self.service = service
        cfg = service.backend
        self.client = client or ModelHttpClient(service.name, cfg)
        self._pin = pin  # (version, label)
        self.status_path = self._model_path(*pin)
        self.predict_path = self.status_path + ":predict"
        self._lock = threading.Lock()
        # Each label's version, shared by the service's backend and every view pinned to
        # the label (one per request), so they learn it once.
        self._label_versions = label_versions if label_versions is not None else {}
        label = pin[1]
        if label is not None and pin[0] is None:
            known = self._label_versions.get(label)
            if known is None:
                known = _Version()
                if len(self._label_versions) < MAX_LABELS_KEPT:
                    known = self._label_versions.setdefault(label, known)
            self._version = known
        else:
            self._version = _Version()
        if pin[0] is not None:
            self._version.value = pin[0]

    def _model_path(self, version: str | None, label: str | None) -> str:
        cfg = self.service.backend
        base = urlsplit(cfg.url or "").path.rstrip("/")
        path = f"{base}/v1/models/{cfg.model}"
        if version is not None:
            return f"{path}/versions/{version}"
        if label is not None:
            return f"{path}/labels/{quote(label, safe='')}"
        return path

    # -- errors ------------------------------------------------------------------------------

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

    def _status_error(self, resp: Response) -> GatewayError:
        """The failure in the gateway's words; the model server's text is only logged.

        The one exception is TF Serving's refusal of a pinned version or label on
        ``:predict``, an authenticated route: a TF Serving client expects its text."""
        pinned = self._pin_error(resp, wire.backend_error_message(resp.data))
        if pinned is not None:
            return pinned
        detail = f"HTTP {resp.status}: {resp.data[:4096].decode('utf-8', 'replace')}"
        return status_error(self.service.name, resp.status, detail)

    # -- the roles ---------------------------------------------------------------------------

    def ensure_reachable(self, deadline: float) -> None:
        self.client.ensure_reachable(deadline)

    def _post(self, body: bytes, deadline: float) -> bytes:
        resp = self.client.send(
            "POST", self.predict_path, body, deadline, on_status=self._status_error
        )
        del body  # megabytes of base64, not needed while the answer is parsed
        if resp.status != 200:
            raise self._status_error(resp)
        return resp.data

    def predict(
        self,
        tiles: Iterable[Sequence[TileInput]],
        deadline: float,
        slide_pixels: object = None,
    ) -> BackendResult:
        started = time.perf_counter()
        size = self.service.backend.max_batch
        table = wire.LabelTable(self.service.labels)
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
                return wire.parse_backend_predictions(
                    data, len(sizes), sizes, table, self.service.backend.max_detections_per_tile
                )

        results = self.client.exchange(bodies(), deadline, lambda b: self._post(b, deadline), read)
        self._await_version(status_future, deadline)
        return BackendResult(
            tiles=[d for batch in results for d in batch],
            labels=tuple(table.labels),
            class_values=tuple(table.values),
            model=self.service.backend.model,
            version=self._version.value,
            backend_ms=(time.perf_counter() - started) * 1000.0,
        )

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
        labels = self.service.labels

        def read(data: bytes, count: int) -> list[Classification]:
            return wire.parse_classifications(data, count, labels)

        results = self.client.exchange(bodies, deadline, lambda b: self._post(b, deadline), read)
        self._await_version(status_future, deadline)
        return ClassifyResult(
            predictions=[c for batch in results for c in batch],
            model=self.service.backend.model,
            version=self._version.value,
            backend_ms=(time.perf_counter() - started) * 1000.0,
        )

    def forward(
        self, body: bytes, deadline: float, headers: dict[str, str] | None = None
    ) -> Forwarded:
        """The body as the client sent it; a 2xx or 4xx answer comes back as the model gave it.

        A 5xx is the model's failure, not the client's, and becomes the gateway's 502/503/504
        like any backend failure (429 and 503 after the retries as well).
        """
        started = time.perf_counter()
        status_future = self._start_version_refresh(deadline)
        resp = self.client.send(
            "POST", self.predict_path, body, deadline, on_status=self._status_error
        )
        if resp.status >= 500 or resp.status in RETRY_STATUSES:
            raise self._status_error(resp)
        self._await_version(status_future, deadline)
        return Forwarded(
            status=resp.status,
            body=resp.data,
            model=self.service.backend.model,
            version=self._version.value,
            backend_ms=(time.perf_counter() - started) * 1000.0,
            error=None if resp.status < 300 else wire.backend_error_message(resp.data),
        )

    # -- the version served --------------------------------------------------------------------

    def _start_version_refresh(self, deadline: float) -> Future | None:
        v = self._version
        now = time.monotonic()
        due = v.value is None and now - v.checked > VERSION_RECHECK_S
        if self._pin[1] is not None and v.value is not None:
            due = now - v.checked > LABEL_RECHECK_S  # a label may have moved
        if not due:
            return None
        with v.lock:
            if now - v.checked <= min(VERSION_RECHECK_S, LABEL_RECHECK_S):
                return None  # another request started it
            v.checked = now
        return self.client.executor.submit(self._refresh_version, deadline)

    def _await_version(self, status_future: Future | None, deadline: float) -> None:
        if status_future is not None:
            try:
                status_future.result(timeout=max(min(deadline - time.monotonic(), 0.5), 0))
            except Exception:
                pass

    def _refresh_version(self, deadline: float) -> None:
        self._version.checked = time.monotonic()
        try:
            self.readiness(deadline=min(deadline, time.monotonic() + 2.0))
        except Exception:
            pass

    # -- versions, labels, metadata ----------------------------------------------------------

    def pinned(self, version: str | None = None, label: str | None = None) -> TFServingBackend:
        """A view of this backend sending its requests to one version or label of the model.

        It shares the connections, the threads and the outbound credentials; the model
        server decides whether the version or label exists.
        """
        if version is None and label is None:
            return self
        return TFServingBackend(self.service, self.client, (version, label), self._label_versions)

    def _get_document(
        self, version: str | None, label: str | None, suffix: str = ""
    ) -> Mapping[str, Any]:
        """A GET on the model server, answered with its own document, or an error that
        says what state the model is in without the model server's words (these routes
        need no credentials)."""
        view = self.pinned(version, label)
        deadline = time.monotonic() + min(self.service.backend.timeout_s, 5.0)
        resp = self.client.send("GET", view.status_path + suffix, None, deadline)
        if resp.status == 200:
            try:
                doc = wire.loads(resp.data)
            except Exception:
                doc = None
            if not isinstance(doc, Mapping):
                raise BackendBadResponse("the model server answered with a body that is not JSON")
            return doc
        pinned = view._pin_error(resp, wire.backend_error_message(resp.data))
        if isinstance(pinned, UnknownVersion):
            raise UnknownVersion(f"the model server has no version {version} of this model")
        if isinstance(pinned, UnknownLabel):
            raise UnknownLabel(
                f"the model server has no version labelled {echo(label)}", status=resp.status
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
        resp = self.client.probe(self.status_path, deadline)
        if isinstance(resp, GatewayError):
            return not_ready(model, resp)
        if resp.status != 200:
            detail = f"HTTP {resp.status}: {wire.backend_error_message(resp.data)}"
            # the model server's text: for logs only (gateway/handlers/health.py)
            return Readiness(False, detail, model, reason=status_reason(resp.status))
        state = wire.model_status(resp.data)
        if state.ready:
            self._version.value = state.version
            self._version.checked = time.monotonic()
        return Readiness(state.ready, state.detail, model, state.version, state.reason)


PROTOCOL = OutboundProtocol(
    name="tfserving",
    fields=Fields({}),
    client=TFServingBackend,
    passthrough_route=":predict",
)
