"""Passthrough: any TF Serving model, the client's body sent unchanged, its answer returned.

The gateway adds what it adds to every service (auth, allow lists, quotas, usage records)
and reads the body only to count its inputs for the quota.
"""

from __future__ import annotations

import time
from typing import cast

from gateway.backends.base import Backend, Forwarded, Forwarder
from gateway.codecs.tfserving_api import passthrough_batch_size
from gateway.config import PASSTHROUGH
from gateway.context import RequestContext
from gateway.registry import Service
from gateway.usecases.checks import Quota, require_kind


def forward(
    service: Service,
    body: bytes,
    *,
    ctx: RequestContext,
    quota: Quota,
    backend: Backend | None = None,
) -> Forwarded:
    """The model's 2xx or 4xx answer; its 5xx, refusals and timeouts raise 502/503/504."""
    require_kind(service.config, PASSTHROUGH)
    ctx.instances = passthrough_batch_size(body)
    quota.check_quota(ctx, images=ctx.instances)
    backend = cast(Forwarder, backend or service.backend)
    deadline = time.monotonic() + service.config.backend.timeout_s
    backend.ensure_reachable(deadline)
    answer = backend.forward(body, deadline)
    ctx.backend_ms += answer.backend_ms
    ctx.backend_model, ctx.backend_version = answer.model, answer.version
    return answer
