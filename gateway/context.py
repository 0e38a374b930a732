"""What is known about one request, filled in as it is handled.

Handlers, auth and usage logging all read and write this one object, so a request that
fails half-way still carries everything learned before the failure into its usage record
and access log.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any


def new_request_id() -> str:
    return uuid.uuid4().hex


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
    backend_ms: float = 0.0
    backend_model: str | None = None
    backend_version: str | None = None
    status: int = 200
    error_code: str | None = None
    error_message: str | None = None
    trace: str | None = None  # raw X-Cloud-Trace-Context / traceparent trace id
    user_agent: str | None = None
    response_bytes: int = 0

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0
