"""What is known about one request, filled in as it is handled.

The request's bookkeeping (gateway.rest.app) fills it: who is calling, and the
:class:`Facts` a use case returns with its result, or attaches to the error it raises, so a
request that fails half-way still carries what was learnt before the failure into its
usage record and access log.  Use cases never see it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Facts:
    """What a use case learnt about the work it did, for usage records and logs."""

    instances: int = 0
    image: dict[str, Any] | None = None  # first instance: bytes, width, height, format
    tiles: int = 0
    detections: int = 0  # detections answered
    threshold: float | None = None  # the threshold they were cut at; None: not cut
    uncut: bool = False  # every detection answered, at any score (raw, not a count)
    backend_ms: float = 0.0
    backend_model: str | None = None
    backend_version: str | None = None


@dataclass
class RequestContext:
    method: str
    path: str
    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.perf_counter)
    route: str = "unknown"  # predict | detect | classify | services | healthz | readyz | ...
    service: str | None = None
    principal: str = "anonymous"  # firebase:<uid> | google:<email> | key:<id> | anonymous
    auth_method: str = "none"  # firebase | google | api_key | none
    body_bytes: int = 0
    image: dict[str, Any] | None = None  # first instance: bytes, width, height, format
    instances: int = 0
    tiles: int = 0
    detections: int = 0
    threshold: float | None = None
    uncut: bool = False
    backend_ms: float = 0.0
    backend_model: str | None = None
    backend_version: str | None = None
    status: int = 200
    error_code: str | None = None
    error_message: str | None = None
    trace: str | None = None  # raw X-Cloud-Trace-Context / traceparent trace id
    user_agent: str | None = None
    response_bytes: int = 0

    def record(self, facts: Facts) -> None:
        """The use case's facts, into the fields usage records and the access log read."""
        for name in (
            "instances",
            "image",
            "threshold",
            "tiles",
            "detections",
            "uncut",
            "backend_ms",
            "backend_model",
            "backend_version",
        ):
            setattr(self, name, getattr(facts, name))

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0
