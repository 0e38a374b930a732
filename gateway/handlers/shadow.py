"""A request's shadow run: the same use case on the shadow variant, concurrently with the
primary call, its answer compared and never returned.

The shadow runs in a thread of a small bounded pool, under a deadline of its own that ends
``shadow.max_wait_ms`` after it starts (or sooner, at its backend's ``timeout_s``), and the
answer waits for it until then: nothing of it is left running after the response (Cloud
Functions throttle the CPU once the response is sent).  When every slot is busy the shadow
is skipped rather than queued.  Its failure, or its cut at the deadline, is recorded and
never changes the caller's status; it takes nothing from the caller's quota.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from gateway import logs
from gateway.errors import BackendTimeout, GatewayError
from gateway.registry import Service
from gateway.usecases.checks import Quota, no_quota

SLOTS = 4  # shadows running at once in one process
JOIN_GRACE_S = 0.5  # past the shadow's deadline, for its last answer to be read

R = TypeVar("R")
# A use case bound to its inputs: run it on this service, charging this quota.
UseCase = Callable[[Service, Quota], R]

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_slots = threading.BoundedSemaphore(SLOTS)


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=SLOTS, thread_name_prefix="shadow")
        return _pool


@dataclass(frozen=True)
class Shadow:
    variant: str
    service: Service  # the shadow variant's service
    max_wait_ms: int


def bounded(service: Service, max_wait_ms: int) -> Service:
    """The service with its backend exchange cut at ``max_wait_ms``."""
    backend = service.config.backend
    timeout_s = min(backend.timeout_s, max(max_wait_ms, 1) / 1000.0)
    config = replace(service.config, backend=replace(backend, timeout_s=timeout_s))
    return Service(config, service.backend, service.kind)


# Told what the shadow did: (its outcome, its result or None, the primary's result or None).
Report = Callable[[dict[str, Any], Any, Any], None]


def run_with_shadow(
    primary: Service, quota: Quota, shadow: Shadow | None, call: UseCase, report: Report
) -> Any:
    """The primary's result; ``report`` hears what the shadow did before this returns, and
    before the primary's error, if it failed, is raised as it is."""
    if shadow is None:
        return call(primary, quota)
    if not _slots.acquire(blocking=False):
        report({"variant": shadow.variant, "status": "skipped"}, None, None)
        return call(primary, quota)
    cut_short = shadow.max_wait_ms / 1000.0 < shadow.service.config.backend.timeout_s
    started = time.monotonic()

    def shadow_call() -> Any:
        try:
            return call(bounded(shadow.service, shadow.max_wait_ms), no_quota)
        finally:
            _slots.release()

    try:
        future = _executor().submit(shadow_call)
    except RuntimeError:  # the pool is shut down (the process is stopping)
        _slots.release()
        report({"variant": shadow.variant, "status": "skipped"}, None, None)
        return call(primary, quota)
    result = None
    try:
        result = call(primary, quota)
    finally:
        outcome, shadow_result = _join(future, shadow, started, cut_short)
        report(outcome, shadow_result, result)
    return result


def _join(
    future: Future, shadow: Shadow, started: float, cut_short: bool
) -> tuple[dict[str, Any], Any]:
    wait = started + shadow.max_wait_ms / 1000.0 + JOIN_GRACE_S - time.monotonic()
    outcome: dict[str, Any] = {"variant": shadow.variant}
    try:
        result = future.result(timeout=max(wait, 0.0))
    except TimeoutError:
        outcome.update(status="cut", error_code="max_wait")
        logs.emit("WARNING", "shadow still running at its deadline", variant=shadow.variant)
        return outcome, None
    except BackendTimeout as exc:
        outcome.update(status="cut" if cut_short else "failed", error_code=exc.code)
        _facts_into(outcome, exc.facts)
        return outcome, None
    except GatewayError as exc:
        outcome.update(status="failed", error_code=exc.code)
        _facts_into(outcome, exc.facts)
        return outcome, None
    except Exception as exc:  # a shadow's fault never reaches the caller
        outcome.update(status="failed", error_code="internal")
        logs.emit("ERROR", "shadow failed", variant=shadow.variant, error=repr(exc))
        return outcome, None
    outcome["status"] = "ok"
    _facts_into(outcome, getattr(result, "facts", None))
    return outcome, result


def _facts_into(outcome: dict[str, Any], facts: Any) -> None:
    if facts is None:
        return
    outcome.update(
        tiles=int(facts.tiles),
        backend_ms=round(float(facts.backend_ms), 1),
        model=facts.backend_model,
        version=facts.backend_version,
    )
