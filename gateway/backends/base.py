"""What every backend takes and gives back.

Backends are leaves: these types are theirs, and the layers above build their inputs and
read their outputs.  Detection backends answer per tile in the tile's own pixels, so the
merge step never needs to know whether a detection came from TF Serving's normalized boxes
or the local detector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from gateway.config import ServiceConfig
from gateway.errors import (
    BackendBadResponse,
    BackendTimeout,
    CredentialsUnavailable,
    GatewayError,
)
from gateway.schema import Fields


@dataclass(frozen=True)
class TileDetections:
    """Detections of one tile, boxes in the tile's own pixels as [x0, y0, x1, y1]."""

    boxes: np.ndarray  # float (N, 4)
    scores: np.ndarray  # float (N,)
    classes: np.ndarray  # int (N,)
    # The model's other per-detection outputs (first dimension N), by output name, so
    # they can follow their detection through the merge (detection_multiclass_scores...).
    extras: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class TileInput:
    index: int
    width: int
    height: int
    pixels: np.ndarray | None = None  # H x W x 3 view, for in-process backends
    encoded: bytes | None = None  # JPEG/PNG bytes, for remote backends


@dataclass(frozen=True)
class BackendResult:
    tiles: list[TileDetections]
    labels: tuple[str, ...]  # TileDetections.classes index into this tuple...
    class_values: tuple[float, ...]  # ...and this one: the backend's own class number
    model: str
    version: str | None = None
    backend_ms: float = 0.0


@dataclass(frozen=True)
class ImageInput:
    """One whole image for a classifier, encoded as it will be sent."""

    encoded: bytes


@dataclass(frozen=True)
class Classification:
    labels: tuple[str, ...]
    scores: tuple[float, ...]  # one per label, in the model's order


@dataclass(frozen=True)
class ClassifyResult:
    predictions: list[Classification]  # one per image, in order
    model: str
    version: str | None = None
    backend_ms: float = 0.0


@dataclass(frozen=True)
class Forwarded:
    """A model's answer to a body sent unchanged: a 2xx or a 4xx, as the model gave it."""

    status: int
    body: bytes
    model: str
    version: str | None = None
    backend_ms: float = 0.0
    error: str | None = None  # a 4xx's ``error`` text
    # Headers of the answer that describe its body (a binary tensor extension's header
    # length, its content type), passed on to the client.
    headers: Mapping[str, str] = field(default_factory=dict)


# Why a model is not ready, as ``/readyz`` names it: the class of the failure, never the
# model server's own text (that goes to the logs, ``detail``).
UNREACHABLE = "unreachable"  # no connection to the model server
TIMEOUT = "timeout"  # connected, no answer in time
NO_CREDENTIALS = "no_credentials"  # the gateway could not get its token for the backend
CREDENTIALS_REFUSED = "credentials_refused"  # the model server refused them (401, 403)
MODEL_NOT_AVAILABLE = "model_not_available"  # the server answers, the model is not served
UNAVAILABLE = "unavailable"  # the server says it cannot serve now (429, 503)
BAD_RESPONSE = "bad_response"  # an answer the gateway cannot read
READINESS_REASONS = (
    UNREACHABLE,
    TIMEOUT,
    NO_CREDENTIALS,
    CREDENTIALS_REFUSED,
    MODEL_NOT_AVAILABLE,
    UNAVAILABLE,
    BAD_RESPONSE,
)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    detail: str  # for the logs: may hold the model server's own text
    model: str
    version: str | None = None
    reason: str | None = None  # None when ready; else one of READINESS_REASONS


class ModelState(NamedTuple):
    """What a model server's status document says (its wire module reads it)."""

    ready: bool
    version: str | None
    detail: str
    reason: str | None = None  # None when ready


def status_reason(status: int) -> str:
    """The reason class of a model server's HTTP status on a readiness check."""
    if status in (401, 403):
        return CREDENTIALS_REFUSED
    if status == 404:
        return MODEL_NOT_AVAILABLE
    if status in (429, 503):
        return UNAVAILABLE
    if status == 504:
        return TIMEOUT
    return BAD_RESPONSE


def error_reason(exc: GatewayError) -> str:
    """The reason class of a failure to ask the model server at all."""
    if isinstance(exc, CredentialsUnavailable):
        return NO_CREDENTIALS
    if isinstance(exc, BackendTimeout):
        return TIMEOUT
    if isinstance(exc, BackendBadResponse):
        return BAD_RESPONSE
    return UNREACHABLE


def not_ready(model: str, exc: GatewayError) -> Readiness:
    """Readiness after a failure to ask: the error's message for the logs, its class."""
    return Readiness(False, exc.message, model, reason=error_reason(exc))


class Backend(Protocol):
    def ensure_reachable(self, deadline: float) -> None:
        """Raise BackendUnavailable at once when the backend is known to be down."""
        ...

    def readiness(self) -> Readiness: ...

    def pinned(self, version: str | None = None, label: str | None = None) -> Backend:
        """This backend with its requests for one version or label of the model (itself
        when neither is given); raises UnknownVersion/UnknownLabel when it knows at once."""
        ...

    def model_status(self, version: str | None = None, label: str | None = None) -> dict:
        """TF Serving's ``{"model_version_status": [...]}`` with the model's own versions."""
        ...

    def model_metadata(self, version: str | None = None, label: str | None = None) -> dict:
        """TF Serving's ``GetModelMetadataResponse`` (``model_spec``, ``metadata``)."""
        ...


class Detector(Backend, Protocol):
    wants_encoded: bool  # True: give it encoded tiles; False: pixel arrays

    def predict(
        self,
        tiles: Iterable[Sequence[TileInput]],
        deadline: float,
        slide_pixels: np.ndarray | None = None,
    ) -> BackendResult:
        """Detections for each tile, in order; ``deadline`` is a ``time.monotonic()`` value.

        ``tiles`` is a stream of groups: each group is sent as soon as it arrives, while
        the next is still being made.  ``slide_pixels`` is the whole decoded slide when the
        backend runs in-process, so it can work out slide-wide facts (the cell scale) once
        instead of per tile.
        """
        ...


class Classifier(Backend, Protocol):
    def classify(self, images: Sequence[ImageInput], deadline: float) -> ClassifyResult: ...


class Forwarder(Backend, Protocol):
    def forward(
        self, body: bytes, deadline: float, headers: dict[str, str] | None = None
    ) -> Forwarded:
        """``headers``: those of the client's that describe the body (a binary tensor
        extension's header length), passed on."""
        ...


@dataclass(frozen=True)
class OutboundProtocol:
    """How the gateway speaks to one kind of model server: one module per protocol, listed
    by one line in :data:`gateway.backends.PROTOCOLS` (``docs/extending.md``)."""

    name: str
    fields: Fields  # the keys it adds to a service's ``backend`` section
    client: Callable[[ServiceConfig], Backend]  # builds the backend of one service
    passthrough_route: str | None = None  # the inbound route whose bodies it takes unchanged
    # The roles its client plays (detector, classifier, forwarder): a service whose kind
    # needs another is refused at start-up, not at its first request.
    roles: tuple[str, ...] = ("detector", "classifier", "forwarder")
    make_options: Callable[[dict[str, Any], str], Any] | None = None
    # The URL when the backend section names none (a cloud API's own); None: the
    # service runs on the embedded detector instead.
    make_default_url: Callable[[Any], str] | None = None
    # True: it signs its requests itself (Vertex AI's access tokens), so ``backend.auth``
    # is refused at start-up and ``credentials_file`` is its own.
    own_credentials: bool = False

    def options(self, values: dict[str, Any], where: str) -> Any:
        """The protocol's typed options from its checked keys (ConfigError for the rest)."""
        return self.make_options(values, where) if self.make_options else None

    def default_url(self, options: Any) -> str | None:
        return self.make_default_url(options) if self.make_default_url else None


def too_many_detections(count: int, limit: int | None) -> BackendBadResponse | None:
    """The refusal of a tile's answer with more rows than ``backend.max_detections_per_tile``
    (every protocol's reader asks): a model that answers millions is broken, and the merge
    and the answer would hold them all."""
    if limit is None or count <= limit:
        return None
    return BackendBadResponse(
        f"the model answered {count} detections for a tile, more than "
        f"backend.max_detections_per_tile ({limit})"
    )
