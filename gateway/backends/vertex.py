"""Outbound Vertex AI online prediction (``protocol: vertex``): AutoML image models (object
detection, classification) and custom models deployed to a Vertex AI endpoint, as a thin
adapter over the shared HTTP client (:mod:`gateway.backends.http_client`).

Requests are signed with an OAuth 2.0 access token (:class:`AccessTokenSource`: Application
Default Credentials, or ``credentials_file``), fetched once and refreshed before it expires.
Tiles go base64 in the AutoML image schema, as many to a request as ``max_batch`` allows
while the body stays under Vertex's 1.5 MB limit (:mod:`gateway.backends.vertex_wire`), with
no confidence threshold so the merge sees every detection.  Readiness is the endpoint
resource itself: ready once a model is deployed to it.  The endpoint splits its traffic
between its deployed models, so requests cannot pin a version or a label; the version an
answer names (``modelVersionId``, else ``deployedModelId``) is the answer's.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from gateway.backends import vertex_wire as wire
from gateway.backends.base import (
    BackendResult,
    Classification,
    ClassifyResult,
    Forwarded,
    ImageInput,
    OutboundProtocol,
    Readiness,
    TileInput,
    not_ready,
    status_reason,
)
from gateway.backends.credentials import AccessTokenSource
from gateway.backends.http_client import RETRY_STATUSES, ModelHttpClient, status_error
from gateway.backends.http_pool import Response
from gateway.backends.tfserving_wire import LabelTable
from gateway.config import ServiceConfig
from gateway.errors import (
    BackendBadResponse,
    BackendUnavailable,
    GatewayError,
    NotFound,
    UnknownLabel,
    UnknownVersion,
)
from gateway.jsonio import loads
from gateway.schema import INTEGER, STRING, ConfigError, Fields, Setting

# Detection asks for every detection: the merge needs the low scores at the seams, and the
# gateway's threshold is applied after it.
CONFIDENCE_THRESHOLD = 0.0
_LOCATION = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")  # a region, part of the endpoint's host


@dataclass(frozen=True)
class VertexOptions:
    project: str
    location: str  # a region: us-central1, europe-west4...
    endpoint: str  # the endpoint's id
    max_predictions: int  # per tile or image: Vertex's maxPredictions

    @property
    def resource(self) -> str:
        parts = (self.project, self.location, self.endpoint)
        p, loc, e = (quote(part, safe="") for part in parts)
        return f"projects/{p}/locations/{loc}/endpoints/{e}"


FIELDS = Fields(
    {
        "project": STRING,
        "location": STRING,
        "endpoint": STRING,
        "max_predictions": Setting(INTEGER, 100, lo=1),
    }
)


def options(values: dict[str, Any], where: str) -> VertexOptions:
    for key in ("project", "location", "endpoint"):
        if not values[key]:
            raise ConfigError(f"{where}.{key} is required for protocol 'vertex'")
    if not _LOCATION.fullmatch(values["location"]):
        raise ConfigError(
            f"{where}.location must be a region such as us-central1, got {values['location']!r}"
        )
    return VertexOptions(
        project=values["project"],
        location=values["location"],
        endpoint=values["endpoint"],
        max_predictions=values["max_predictions"],
    )


def default_url(opts: VertexOptions) -> str:
    """The regional API endpoint of the endpoint's location."""
    return f"https://{opts.location}-aiplatform.googleapis.com"


class VertexBackend:
    wants_encoded = True

    def __init__(
        self,
        service: ServiceConfig,
        client: ModelHttpClient | None = None,
        tokens: AccessTokenSource | None = None,
    ) -> None:
        self.service = service
        cfg = service.backend
        self.opts: VertexOptions = cfg.options
        self.tokens = tokens or AccessTokenSource(cfg.credentials_file)
        self.client = client or ModelHttpClient(service.name, cfg, token_source=self.tokens)
        base = urlsplit(cfg.url or "").path.rstrip("/")
        self.endpoint_path = f"{base}/v1/{self.opts.resource}"
        self.predict_path = self.endpoint_path + ":predict"
        self._served: str | None = None  # the version the last answer named
        self._lock = threading.Lock()

    # -- errors ------------------------------------------------------------------------------

    def _status_error(self, resp: Response, what: str = "a tile") -> GatewayError:
        """The endpoint's failure in the gateway's words; its own text is only logged."""
        detail = f"HTTP {resp.status}: {resp.data[:4096].decode('utf-8', 'replace')}"
        if resp.status in (400, 404):
            return BackendBadResponse(
                f"the Vertex AI endpoint rejected {what} (HTTP {resp.status})",
                code="backend_rejected",
                detail=detail,
            )
        if resp.status == 401:  # the token expired early or was revoked: fetch another
            self.tokens.invalidate()
            return BackendUnavailable(
                "the Vertex AI endpoint refused the gateway's credentials", detail=detail
            )
        return status_error(self.service.name, resp.status, detail, what)

    def ensure_reachable(self, deadline: float) -> None:
        self.client.ensure_reachable(deadline)

    # -- the roles ---------------------------------------------------------------------------

    def _post(self, body: bytes, deadline: float, what: str) -> bytes:
        resp = self.client.send(
            "POST",
            self.predict_path,
            body,
            deadline,
            on_status=lambda r: self._status_error(r, what),
        )
        del body  # megabytes of base64, not needed while the answer is parsed
        if resp.status != 200:
            raise self._status_error(resp, what)
        return resp.data

    def _params(self) -> dict[str, Any]:
        return {
            "confidence_threshold": CONFIDENCE_THRESHOLD,
            "max_predictions": self.opts.max_predictions,
        }

    def _note(self, version: str | None, seen: list[str]) -> None:
        if version is not None:
            seen.append(version)
            self._served = version

    def predict(
        self,
        tiles: Iterable[Sequence[TileInput]],
        deadline: float,
        slide_pixels: object = None,
    ) -> BackendResult:
        started = time.perf_counter()
        table = LabelTable(self.service.labels)
        params = self._params()
        overhead = wire.body_overhead(**params)
        size = self.service.backend.max_batch
        seen: list[str] = []

        def bodies() -> Iterator[tuple[bytes, list[tuple[int, int]]]]:
            for group in tiles:
                items = ((wire.instance(t.encoded or b""), (t.width, t.height)) for t in group)
                for batch in wire.pack(items, max_count=size, overhead=overhead):
                    body = wire.predict_body([piece for piece, _ in batch], **params)
                    sizes = [s for _, s in batch]
                    batch = None
                    yield body, sizes
                    body = None
                group = None  # the bodies hold the tiles: not kept while the next is made

        def read(data: bytes, sizes: list[tuple[int, int]]):
            with self._lock:  # the label table is shared by the batches of one request
                found, version = wire.parse_detections(
                    data, len(sizes), sizes, table, self.service.backend.max_detections_per_tile
                )
                self._note(version, seen)
            return found

        results = self.client.exchange(
            bodies(), deadline, lambda b: self._post(b, deadline, "a tile"), read
        )
        return BackendResult(
            tiles=[d for batch in results for d in batch],
            labels=tuple(table.labels),
            class_values=tuple(table.values),
            model=self.service.backend.model,
            version=seen[0] if seen else self._served,
            backend_ms=(time.perf_counter() - started) * 1000.0,
        )

    def classify(self, images: Sequence[ImageInput], deadline: float) -> ClassifyResult:
        started = time.perf_counter()
        params = self._params()
        overhead = wire.body_overhead(**params)
        items = ((wire.instance(img.encoded), None) for img in images)
        batches = (
            (wire.predict_body([piece for piece, _ in batch], **params), len(batch))
            for batch in wire.pack(
                items, max_count=self.service.backend.max_batch, overhead=overhead
            )
        )
        seen: list[str] = []

        def read(data: bytes, count: int) -> list[Classification]:
            found, version = wire.parse_classifications(data, count)
            with self._lock:
                self._note(version, seen)
            return found

        results = self.client.exchange(
            batches, deadline, lambda b: self._post(b, deadline, "an image"), read
        )
        return ClassifyResult(
            predictions=[c for batch in results for c in batch],
            model=self.service.backend.model,
            version=seen[0] if seen else self._served,
            backend_ms=(time.perf_counter() - started) * 1000.0,
        )

    def forward(
        self, body: bytes, deadline: float, headers: dict[str, str] | None = None
    ) -> Forwarded:
        """The client's ``:predict`` body as it came; a 2xx or the endpoint's refusal of the
        body (4xx) as the endpoint gave it.  A refusal of the gateway's own credentials, 429
        and 5xx are the gateway's 502/503/504."""
        started = time.perf_counter()
        resp = self.client.send(
            "POST",
            self.predict_path,
            body,
            deadline,
            on_status=lambda r: self._status_error(r, "the body"),
        )
        if resp.status >= 500 or resp.status in RETRY_STATUSES or resp.status in (401, 403):
            raise self._status_error(resp, "the body")
        version = None
        if resp.status < 300:
            try:
                doc = loads(resp.data)
            except Exception:
                doc = None
            version = wire.answer_version(doc) if isinstance(doc, dict) else None
            if version is not None:
                self._served = version
        return Forwarded(
            status=resp.status,
            body=resp.data,
            model=self.service.backend.model,
            version=version,
            backend_ms=(time.perf_counter() - started) * 1000.0,
            error=None if resp.status < 300 else wire.error_message(resp.data),
        )

    # -- versions, readiness, metadata -------------------------------------------------------

    def pinned(self, version: str | None = None, label: str | None = None) -> VertexBackend:
        """Itself: a Vertex AI endpoint splits its traffic between its deployed models, so a
        request for one version or label is refused with a clear answer."""
        why = (
            f"service {self.service.name!r} is a Vertex AI endpoint, which splits its traffic "
            "between its deployed models itself"
        )
        if label is not None:
            raise UnknownLabel(f"{why}: it has no version labels")
        if version is not None:
            raise UnknownVersion(f"{why}: it cannot be asked for version {version}")
        return self

    def readiness(self, deadline: float | None = None) -> Readiness:
        """The endpoint resource: ready when it exists and a model is deployed to it."""
        model = self.service.backend.model
        resp = self.client.probe(self.endpoint_path, deadline)
        if isinstance(resp, GatewayError):  # no token, a timeout
            return not_ready(model, resp)
        if resp.status != 200:
            if resp.status == 401:
                self.tokens.invalidate()
            detail = f"HTTP {resp.status}: {wire.error_message(resp.data)}"
            # the endpoint's text: logs only; 404: no such endpoint
            return Readiness(False, detail, model, reason=status_reason(resp.status))
        state = wire.endpoint_state(resp.data)
        if state.version is not None:
            self._served = state.version
        version = (state.version or self._served) if state.ready else None
        return Readiness(state.ready, state.detail, model, version, state.reason)

    def model_status(self, version: str | None = None, label: str | None = None) -> dict:
        """TF Serving's status document for TF Serving clients, from the endpoint's
        readiness."""
        self.pinned(version, label)
        state = self.readiness()
        if not state.ready:
            raise BackendUnavailable(
                "the model is not available on its server", code="model_not_available"
            )
        row = {
            "version": state.version or "",
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }
        return {"model_version_status": [row]}

    def model_metadata(self, version: str | None = None, label: str | None = None) -> dict:
        raise NotFound(
            f"the model of service {self.service.name!r} is a Vertex AI endpoint: "
            "it has no TF Serving signature to describe"
        )


PROTOCOL = OutboundProtocol(
    name="vertex",
    fields=FIELDS,
    client=VertexBackend,
    passthrough_route="vertex",
    make_options=options,
    make_default_url=default_url,
    own_credentials=True,
)
