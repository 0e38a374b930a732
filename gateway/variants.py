"""Which variant of a service's model serves a request, and whether a shadow sees it too.

A caller is routed by a stable hash of its principal and the service, with weighted
rendezvous hashing: each variant scores ``weight / -ln(u)`` for a ``u`` drawn from the hash
of (service, principal, variant) and the highest score serves.  Each variant wins with
probability ``weight / sum(weights)``; the same caller gets the same variant while the
weights stay the same; and when a variant is skipped (not ready) or its weight changes,
only the callers that variant gained or lost move, everyone else stays where they were.
A request without an identity is routed by its request id, that is per request.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gateway.auth import principal_matches
from gateway.config import ServiceConfig, ShadowConfig, VariantConfig

NOT_READY_HOLD_S = 10.0  # a variant found not ready is skipped this long before a new try


def unit_hash(*parts: str) -> float:
    """A number in (0, 1), the same for the same parts on every instance and every run."""
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") + 0.5) / 2**64


def rendezvous(key: str, weighted: Sequence[tuple[str, float]]) -> str:
    """The name among ``weighted`` (name, weight > 0) that ``key`` is routed to."""
    best, best_score = weighted[0][0], -1.0
    for name, weight in weighted:
        if weight <= 0:
            continue
        score = weight / -math.log(unit_hash(key, name))
        if score > best_score:
            best, best_score = name, score
    return best


def pinned_variant(variants: Sequence[VariantConfig], principal: str | None) -> str | None:
    """The variant whose ``allow`` names this caller (the first listed), if any."""
    if principal is None:
        return None
    for v in variants:
        if any(principal_matches(pattern, principal) for pattern in v.allow):
            return v.name
    return None


def route(
    service: str,
    variants: Sequence[VariantConfig],
    principal: str | None,
    request_id: str,
    ready: Callable[[str], bool] = lambda name: True,
) -> str:
    """The variant that serves: the caller's pinned one, else by weight among the ready
    ones (all of them when none is ready: the caller then hears why)."""
    pinned = pinned_variant(variants, principal)
    if pinned is not None:
        return pinned
    weighted = [(v.name, v.weight) for v in variants if v.weight > 0]
    live = [(n, w) for n, w in weighted if ready(n)] or weighted
    key = f"{service}\0principal\0{principal}" if principal else f"{service}\0request\0{request_id}"
    return rendezvous(key, live)


def shadow_due(shadow: ShadowConfig | None, serving: str, request_id: str) -> bool:
    """This request is also sent to the shadow: a ``share`` of requests, drawn from the
    request id, never when the shadow variant is the one serving it."""
    if shadow is None or shadow.share <= 0 or serving == shadow.variant:
        return False
    return unit_hash("shadow", request_id) < shadow.share


@dataclass(frozen=True)
class Variant:
    """A variant as it serves: its name and the service as that variant runs it."""

    name: str
    service: Any  # gateway.registry.Service, its config's backend the variant's own


class Readiness:
    """Which variants were found not ready lately (by ``/readyz`` or an unreachable server),
    so routing gives their share to the others for a while."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def mark(self, name: str, ready: bool) -> None:
        with self._lock:
            if ready:
                self._until.pop(name, None)
            else:
                self._until[name] = time.monotonic() + NOT_READY_HOLD_S

    def ready(self, name: str) -> bool:
        until = self._until.get(name)
        return until is None or until <= time.monotonic()


def variant_config(service: ServiceConfig, variant: VariantConfig) -> ServiceConfig:
    """The service's configuration as one of its variants serves it."""
    return replace(service, backend=variant.backend)
