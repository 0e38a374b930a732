"""Passthrough: any model, the client's body sent unchanged, its answer returned.

The gateway adds what it adds to every service (auth, allow lists, quotas, usage records)
and reads the body only to count its inputs for the quota.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from gateway.backends.base import Backend, Forwarded, Forwarder
from gateway.context import Facts
from gateway.usecases.checks import Quota, reporting


@dataclass(frozen=True)
class ForwardedAnswer:
    answer: Forwarded
    facts: Facts = field(default_factory=Facts)


def forward(
    service: Any,
    body: bytes,
    *,
    batch_size: Callable[[bytes], int],
    quota: Quota,
    backend: Backend | None = None,
    headers: dict[str, str] | None = None,
) -> ForwardedAnswer:
    """The model's 2xx or 4xx answer; its 5xx, refusals and timeouts raise 502/503/504.

    ``batch_size`` counts the images of a body in the inbound protocol's terms (the quota
    charges them)."""
    facts = Facts(instances=batch_size(body))
    forwarder = cast(Forwarder, backend or service.backend)
    with reporting(facts):
        quota(facts.instances)
        deadline = time.monotonic() + service.config.backend.timeout_s
        forwarder.ensure_reachable(deadline)
        answer = forwarder.forward(body, deadline, headers or {})
        facts.backend_ms += answer.backend_ms
        facts.backend_model, facts.backend_version = answer.model, answer.version
    return ForwardedAnswer(answer, facts)
