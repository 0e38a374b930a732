"""Outbound Open Inference Protocol (``protocol: v2``): Triton, KServe and MLServer models,
as a thin adapter over the shared HTTP client (:mod:`gateway.backends.http_client`).

Tiles or whole images go as one ``BYTES`` tensor per request (Triton's binary data
extension, or base64 strings marked ``content_type: base64``, MLServer's convention); the
outputs the configuration names are read back (:mod:`gateway.backends.v2_wire`), boxes in
their declared layout converted to tile pixels before the merge.  Readiness and metadata
come from the protocol's own routes; versions are the model server's, labels it has none.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from gateway.backends import v2_wire as wire
from gateway.backends.base import (
    MODEL_NOT_AVAILABLE,
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
from gateway.backends.boxes import BOX_FORMATS
from gateway.backends.http_client import RETRY_STATUSES, ModelHttpClient, status_error
from gateway.backends.http_pool import Response
from gateway.backends.labels import LabelTable
from gateway.config import ServiceConfig
from gateway.errors import (
    BackendBadResponse,
    BackendUnavailable,
    GatewayError,
    NotFound,
    UnknownLabel,
    UnknownVersion,
)
from gateway.schema import STRING, Fields, Setting

HEADER_LENGTH = "Inference-Header-Content-Length"
VERSION_RECHECK_S = 30.0


@dataclass(frozen=True)
class V2Options:
    image_input: str  # the BYTES input the images go in
    bytes_mode: str  # binary | base64
    box_format: str  # yxyx_normalized | xyxy_normalized | xyxy_pixels
    boxes: str
    scores: str | None  # None: detection_scores for a detector, scores for a classifier
    classes: str
    labels: str | None  # a classifier's label output, if the model answers one
    count: str | None  # the per-image count of real rows (TF's num_detections)


FIELDS = Fields(
    {
        "inputs": Fields({"image": Setting(STRING, "image_bytes")}),
        "outputs": Fields(
            {
                "boxes": Setting(STRING, "detection_boxes"),
                "scores": Setting(STRING, None),
                "classes": Setting(STRING, "detection_classes_as_text"),
                "labels": Setting(STRING, None),
                "count": Setting(STRING, "num_detections"),
            }
        ),
        "bytes": Setting(STRING, "binary", choices=("binary", "base64")),
        "box_format": Setting(STRING, BOX_FORMATS[0], choices=BOX_FORMATS),
    }
)


def options(values: dict[str, Any], where: str) -> V2Options:
    out = values["outputs"]
    return V2Options(
        image_input=values["inputs"]["image"],
        bytes_mode=values["bytes"],
        box_format=values["box_format"],
        boxes=out["boxes"],
        scores=out["scores"],
        classes=out["classes"],
        labels=out["labels"],
        count=out["count"],
    )


class _Learnt:
    """What the model server's metadata says, asked once (again after a failure)."""

    def __init__(self) -> None:
        self.done = False
        self.asked = 0.0
        self.row_shape: tuple[int, ...] = ()  # the image input's dimensions after the batch
        self.version: str | None = None


class V2Backend:
    wants_encoded = True

    def __init__(
        self,
        service: ServiceConfig,
        client: ModelHttpClient | None = None,
        version: str | None = None,
        learnt: _Learnt | None = None,
    ) -> None:
        self.service = service
        self.opts: V2Options = service.backend.options
        self.client = client or ModelHttpClient(service.name, service.backend)
        self.version = version
        base = urlsplit(service.backend.url or "").path.rstrip("/")
        self.model_path = f"{base}/v2/models/{quote(service.backend.model, safe='')}"
        if version is not None:
            self.model_path += f"/versions/{quote(version, safe='')}"
        self._learnt = learnt or _Learnt()  # shared by the views of one service
        self._lock = threading.Lock()
        self._sequence = 0

    # -- errors ------------------------------------------------------------------------------

    def _status_error(self, resp: Response) -> GatewayError:
        detail = f"HTTP {resp.status}: {wire.error_message(resp.data)}"
        if self.version is not None and resp.status == 404:
            return UnknownVersion(f"the model server has no version {self.version} of this model")
        return status_error(self.service.name, resp.status, detail)

    def ensure_reachable(self, deadline: float) -> None:
        self.client.ensure_reachable(deadline)

    # -- the roles ---------------------------------------------------------------------------

    def _request_id(self) -> str:
        with self._lock:
            self._sequence += 1
            return f"{self.service.name}-{self._sequence}"

    def _post_infer(self, body: bytes, headers: dict[str, str], deadline: float) -> Response:
        return self.client.send(
            "POST",
            self.model_path + "/infer",
            body,
            deadline,
            headers=headers,
            on_status=self._status_error,
        )

    def _infer(self, images: Sequence[bytes], outputs: Sequence[str], deadline: float):
        body, headers = wire.infer_request(
            images,
            input_name=self.opts.image_input,
            bytes_mode=self.opts.bytes_mode,
            outputs=outputs,
            request_id=self._request_id(),
            row_shape=self._learnt.row_shape,
        )
        resp = self._post_infer(body, headers, deadline)
        del body
        if resp.status != 200:
            raise self._status_error(resp)
        return resp.data, _header_length(resp)

    def predict(
        self,
        tiles: Iterable[Sequence[TileInput]],
        deadline: float,
        slide_pixels: object = None,
    ) -> BackendResult:
        started = time.perf_counter()
        size = self.service.backend.max_batch
        table = LabelTable(self.service.labels)
        o = self.opts
        scores = o.scores or "detection_scores"
        wanted = [o.boxes, scores, o.classes] + ([o.count] if o.count else [])

        def batches() -> Iterator[tuple[list[TileInput], list[tuple[int, int]]]]:
            for group in tiles:
                for i in range(0, len(group), size):
                    batch = list(group[i : i + size])
                    yield batch, [(t.width, t.height) for t in batch]
                group = None

        def post(batch: list[TileInput]) -> tuple[bytes, int | None]:
            return self._infer([t.encoded or b"" for t in batch], wanted, deadline)

        def read(answer: tuple[bytes, int | None], sizes: list[tuple[int, int]]):
            data, header_length = answer
            with self._lock:  # the label table is shared by the batches of one request
                return wire.parse_detections(
                    data,
                    header_length,
                    len(sizes),
                    sizes,
                    table,
                    boxes=o.boxes,
                    scores=scores,
                    classes=o.classes,
                    box_format=o.box_format,
                    count=o.count,
                    max_detections=self.service.backend.max_detections_per_tile,
                )

        self._learn(deadline)
        results = self.client.exchange(batches(), deadline, post, read)
        return BackendResult(
            tiles=[d for batch in results for d in batch],
            labels=tuple(table.labels),
            class_values=tuple(table.values),
            model=self.service.backend.model,
            version=self._served,
            backend_ms=(time.perf_counter() - started) * 1000.0,
        )

    def classify(self, images: Sequence[ImageInput], deadline: float) -> ClassifyResult:
        started = time.perf_counter()
        size = self.service.backend.max_batch
        o = self.opts
        scores = o.scores or "scores"
        wanted = [scores] + ([o.labels] if o.labels else [])
        batches = (
            ([img.encoded for img in images[i : i + size]], len(images[i : i + size]))
            for i in range(0, len(images), size)
        )

        def read(answer: tuple[bytes, int | None], count: int) -> list[Classification]:
            data, header_length = answer
            return wire.parse_classifications(
                data,
                header_length,
                count,
                self.service.labels,
                scores=scores,
                label_output=o.labels,
            )

        self._learn(deadline)
        results = self.client.exchange(
            batches, deadline, lambda b: self._infer(b, wanted, deadline), read
        )
        return ClassifyResult(
            predictions=[c for batch in results for c in batch],
            model=self.service.backend.model,
            version=self._served,
            backend_ms=(time.perf_counter() - started) * 1000.0,
        )

    def forward(
        self, body: bytes, deadline: float, headers: dict[str, str] | None = None
    ) -> Forwarded:
        """The client's infer body as it came (with its binary header length); a 2xx or
        4xx answer as the model gave it, a 5xx the gateway's 502/503/504."""
        started = time.perf_counter()
        resp = self._post_infer(body, headers or {}, deadline)
        if resp.status >= 500 or resp.status in RETRY_STATUSES:
            raise self._status_error(resp)
        described = {}
        length = _header_length(resp)
        if length is not None:
            described = {HEADER_LENGTH: str(length), "Content-Type": "application/octet-stream"}
        return Forwarded(
            status=resp.status,
            body=resp.data,
            model=self.service.backend.model,
            version=self._served,
            backend_ms=(time.perf_counter() - started) * 1000.0,
            error=None if resp.status < 300 else wire.error_message(resp.data),
            headers=described,
        )

    # -- versions, readiness, metadata -------------------------------------------------------

    @property
    def _served(self) -> str | None:
        return self.version or self._learnt.version

    def _learn(self, deadline: float) -> None:
        """The model's metadata before its first request: the version it serves, and the
        image input's declared shape (Triton wants ``[n, 1]`` from a batching model that
        declares ``[1]``).  Asked again 30 s after a failure; never fails a request."""
        learnt = self._learnt
        if learnt.done or time.monotonic() - learnt.asked < VERSION_RECHECK_S:
            return
        learnt.asked = time.monotonic()
        try:
            doc = self._metadata(min(deadline, time.monotonic() + 2.0))
        except GatewayError:
            return
        versions = doc.get("versions") or []
        learnt.version = str(versions[-1]) if versions else None
        for tensor in doc.get("inputs") or []:
            shape = tensor.get("shape") or []
            if tensor.get("name") == self.opts.image_input and len(shape) > 1:
                learnt.row_shape = tuple(max(int(d), 1) for d in shape[1:])
        learnt.done = True

    def pinned(self, version: str | None = None, label: str | None = None) -> V2Backend:
        """A view of this backend for one version of the model (same connections)."""
        if label is not None:
            raise UnknownLabel(
                f"the model server of service {self.service.name!r} has no version labels "
                "(the Open Inference Protocol names versions only)"
            )
        if version is None:
            return self
        return V2Backend(self.service, self.client, version, self._learnt)

    def _metadata(self, deadline: float) -> dict:
        resp = self.client.send("GET", self.model_path, None, deadline)
        if resp.status != 200:
            if self.version is not None and resp.status in (400, 404):
                raise UnknownVersion(
                    f"the model server has no version {self.version} of this model"
                )
            raise BackendUnavailable(
                "the model is not available on its server", code="model_not_available"
            )
        return wire.parse_metadata(resp.data)

    def metadata(self) -> dict:
        """The model server's own metadata document (a passthrough service shows it)."""
        return self._metadata(time.monotonic() + min(self.service.backend.timeout_s, 5.0))

    def readiness(self, deadline: float | None = None) -> Readiness:
        model = self.service.backend.model
        deadline = deadline or time.monotonic() + min(self.service.backend.timeout_s, 5.0)
        resp = self.client.probe(self.model_path + "/ready", deadline)
        if isinstance(resp, GatewayError):
            return not_ready(model, resp)
        if not wire.model_ready(resp.status):
            detail = f"HTTP {resp.status}: {wire.error_message(resp.data)}"
            # The model server's text: logs only.  Triton answers 400 and KServe 503 for a
            # model that is loaded but not ready.
            reason = status_reason(resp.status)
            if resp.status in (400, 503):
                reason = MODEL_NOT_AVAILABLE
            return Readiness(False, detail, model, reason=reason)
        self._learn(deadline)
        return Readiness(True, "ready", model, self._served)

    def model_status(self, version: str | None = None, label: str | None = None) -> dict:
        """TF Serving's status document for TF Serving clients, from the V2 readiness."""
        view = self.pinned(version, label)
        state = view.readiness()
        if not state.ready:
            if version is not None:
                view._metadata(time.monotonic() + 5.0)  # UnknownVersion when there is none
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
            f"the model of service {self.service.name!r} speaks the Open Inference Protocol: "
            f"its metadata is at GET /v2/models/{self.service.name}"
        )


def _header_length(resp: Response) -> int | None:
    headers = getattr(resp, "headers", None)
    value = headers.get(HEADER_LENGTH) if headers is not None else None
    if value is None:
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise BackendBadResponse(f"the model answered a bad {HEADER_LENGTH} header") from exc


PROTOCOL = OutboundProtocol(
    name="v2",
    fields=FIELDS,
    client=V2Backend,
    passthrough_route="infer",
    make_options=options,
)
