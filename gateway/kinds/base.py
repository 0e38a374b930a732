"""What a kind of service is: the keys it adds to a service, the routes it answers, the
role its backend plays, its use case, and what clients are shown of it.

A kind is one module with one :class:`Kind` (``KIND``), listed by one line in
:data:`gateway.kinds.REGISTRY`; nothing else compares kind names.  Inbound protocols that
carry tensors (TF Serving's ``:predict``, the Open Inference Protocol's ``infer``) call
:meth:`Kind.infer` and encode the per-instance :meth:`Kind.rows` it returns, so a new kind
is served by every such protocol at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.config import Limits, ServiceConfig
from gateway.schema import Fields
from gateway.usecases.checks import Quota

# The routes a kind may answer, as a client calls them (formatted with the service's name).
ROUTE_PATHS = {
    ":detect": "POST /v1/services/{name}:detect",
    ":classify": "POST /v1/services/{name}:classify",
    ":predict": "POST /v1/models/{name}:predict",
    "infer": "POST /v2/models/{name}/infer",
    "vertex": "POST /v1/projects/{{project}}/locations/{{location}}/endpoints/{name}:predict",
}


@dataclass(frozen=True)
class Output:
    """One output tensor of a kind, as the Open Inference Protocol's metadata declares it
    (the batch dimension first)."""

    name: str
    datatype: str  # FP32 | BYTES | INT64 ...
    shape: tuple[int, ...]


@dataclass(frozen=True)
class CliView:
    """What the command line shows for a service of this kind."""

    route: str  # the gateway route a file is sent to: ":detect" or ":classify"
    columns: tuple[str, ...]  # the table's columns after the file name
    csv_fields: tuple[str, ...]  # the result file's columns
    counts: bool  # the summary adds up counts ("N eosinophils in total")


class Kind:
    """The base every kind extends; its defaults are those of a kind that answers images."""

    name: str = ""
    fields: Fields = Fields({})
    routes: tuple[str, ...] = (":predict", "infer")
    role: str = "detector"  # what the backend must be: detector | classifier | forwarder
    embedded: bool = False  # may run on the embedded detector (a backend without a URL)
    forwards: bool = False  # the body goes to the model unchanged (no images read)
    cli: CliView | None = None
    outputs: tuple[Output, ...] = ()
    description: str = ""  # a sentence for people: what a service of this kind does
    # What its comparison records hold (``compare``): "slides" (counts and boxes per slide)
    # or "images" (a label per image); the agreement report reads them by this.
    compares: str | None = None

    def options(self, values: dict[str, Any], where: str) -> Any:
        """The kind's typed options from its checked keys (ConfigError for the rest)."""
        return None

    def serves(self, route: str, service: ServiceConfig) -> bool:
        return route in self.routes

    def public(self, service: ServiceConfig) -> dict[str, Any]:
        """The kind's own fields in ``GET /v1/services``; never secrets."""
        return {}

    def infer(
        self,
        service: Any,
        images: Sequence[bytes],
        threshold: float | None,
        *,
        limits: Limits,
        quota: Quota,
        backend: Any = None,
    ) -> Any:
        """The use case for a batch of images; returns its typed result (with ``facts``)."""
        raise NotImplementedError

    def compare(self, primary: Any, shadow: Any, service: ServiceConfig) -> dict[str, Any] | None:
        """What two variants' results of the same request agree on, as plain JSON-able data
        for the comparison record (never image bytes); None: this kind compares nothing."""
        return None

    def rows(self, result: Any, keys: Sequence[str | None]) -> list[Mapping[str, Any]]:
        """Each instance's named outputs, as TF Serving's row format writes a prediction."""
        raise NotImplementedError
