"""The per-request usage recorder: the hooks the REST layer calls.

It ties three parts together: the quota accounting (:mod:`gateway.usage.allowance`), the
store (:mod:`gateway.usage.stores`) and the outage breaker with its spool
(:mod:`gateway.usage.delivery`).  ``begin`` checks the caller's request rate and starts, in
a small thread pool, warming the store and flushing spooled records; ``check_quota`` takes
the request's images from the caller's daily allowance; ``finish`` waits for what ``begin``
started and commits the record with its counters.  Nothing runs after ``finish`` returns
(Cloud Functions starves the CPU once the response is sent).

Only admitted requests are recorded: ``begin`` is called once the caller is identified
and allowed to use a configured service, so refusals before that (bad credentials, an
unknown service) reach the access log only and write nothing to the store.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from gateway.config import Config
from gateway.context import RequestContext
from gateway.errors import QuotaExceeded
from gateway.usage.allowance import Allowances, Contention
from gateway.usage.delivery import Delivery, log_event
from gateway.usage.quotas import QuotaPolicy
from gateway.usage.ratelimit import DAILY, MINUTE, LimitState, headers
from gateway.usage.records import (
    COUNTERS,
    ledger_id,
    record_from_context,
    seconds_until_utc_day_end,
    utc_day,
)
from gateway.usage.settings import UsageSettings
from gateway.usage.spool import Spool
from gateway.usage.stores import StoreUnavailable, UsageStore, open_store

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="usage")
        return _pool


@dataclass
class _Pending:
    """What ``begin`` started and ``check_quota`` took for one request."""

    day: str
    background: list[Future] = field(default_factory=list)
    ledger: str | None = None  # the daily images ledger the request took from
    taken: int = 0


class UsageRecorder:
    def __init__(
        self,
        config: Config,
        settings: UsageSettings,
        policy: QuotaPolicy,
        store: UsageStore | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.services = frozenset(config.services)
        self.store = store if store is not None else open_store(config, settings)
        self.delivery = Delivery(self.store, settings)
        self.allowances = Allowances(self.store)
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._overrides: dict[str, tuple[float, bool, int | None]] = {}

    @property
    def spool(self) -> Spool:
        return self.delivery.spool

    # -- hooks ---------------------------------------------------------------------------

    def begin(self, ctx: RequestContext) -> None:
        """The caller is admitted: its request is recorded, and counts against its rate.

        Raises :class:`QuotaExceeded` when the caller's ``requests_per_minute`` is used up.
        """
        now = datetime.now(UTC)
        pending = _Pending(day=utc_day(now))
        with self._lock:
            self._pending[ctx.request_id] = pending
        try:
            if not self.delivery.down():
                pending.background.append(_executor().submit(self.delivery.warm_and_flush))
        except Exception as exc:  # usage must never break a request
            log_event("ERROR", "usage: begin failed", error=repr(exc), request_id=ctx.request_id)
        if self.policy.enabled:
            self._check_rate(ctx.principal, now)

    def check_quota(self, ctx: RequestContext, images: int) -> None:
        if not self.policy.enabled:
            return
        with self._lock:
            pending = self._pending.get(ctx.request_id)
        if pending is None:  # begin was not called: behave as if it had been
            self.begin(ctx)
            with self._lock:
                pending = self._pending[ctx.request_id]
        limit = self._daily_limit(ctx.principal)
        if limit is None:
            return
        ledger = ledger_id(ctx.principal, "images", pending.day)
        meta = {"principal": ctx.principal, "kind": "images", "window": pending.day}
        if not self._take(ledger, pending.day, images, limit, meta, ctx.principal):
            retry_after = seconds_until_utc_day_end()
            raise QuotaExceeded(
                f"daily image quota of {limit} reached for {ctx.principal}; "
                f"it resets at 00:00 UTC, in {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )
        pending.ledger, pending.taken = ledger, images

    def finish(self, ctx: RequestContext) -> None:
        try:
            with self._lock:
                pending = self._pending.pop(ctx.request_id, None)
            if pending is None:  # never admitted: the access log has it, the store does not
                return
            for fut in pending.background:  # nothing may outlive the response
                try:
                    fut.result(timeout=2 * self.settings.write_timeout_s)
                except Exception:  # their failures are handled where they run
                    pass
            if pending.taken and ctx.status >= 400:  # only served images are charged
                self.allowances.give(pending.ledger, pending.taken)
            service = ctx.service if ctx.service in self.services else "-"
            self.delivery.write(record_from_context(ctx, service=service))
        except Exception as exc:  # usage must never break a request
            log_event("ERROR", "usage: finish failed", error=repr(exc), request_id=ctx.request_id)

    # -- what a caller is told -----------------------------------------------------------

    def rate_limit_headers(self, ctx: RequestContext) -> dict[str, str]:
        """``RateLimit-Policy`` and ``RateLimit`` for an admitted caller's answer, from what
        this instance knows of the quota ledgers (one read of a ledger it never read, else
        none).  Called before :meth:`finish`: a failed request's images, which ``finish``
        gives back, count as not taken."""
        with self._lock:
            pending = self._pending.get(ctx.request_id)
        if pending is None or not self.policy.enabled:
            return {}
        try:
            states = self.limits(ctx.principal)
            if pending.taken and ctx.status >= 400:
                states = [
                    replace(s, remaining=s.remaining + pending.taken)
                    if s.name == DAILY and s.remaining is not None
                    else s
                    for s in states
                ]
            return headers(states)
        except Exception as exc:  # usage must never break a request
            log_event("ERROR", "usage: rate limit headers failed", error=repr(exc))
            return {}

    def limits(
        self, principal: str, images_used: int | None = None, fresh: bool = False
    ) -> list[LimitState]:
        """The caller's limited policies now.  Remaining daily images: the limit less
        ``images_used`` when given, else the ledger's view (:meth:`Allowances.left`), as
        this instance last read it, or read now when it never did or ``fresh`` asks."""
        if not self.policy.enabled:
            return []
        now = datetime.now(UTC)
        states = []
        daily = self._daily_limit(principal)
        if daily is not None:
            day = utc_day(now)
            if images_used is not None:
                remaining: int | None = max(0, daily - images_used)
            else:
                remaining = self._left(principal, "images", day, daily, fresh)
            reset = seconds_until_utc_day_end(now)
            states.append(LimitState(DAILY, daily, 86400, remaining, reset))
        rate = self.policy.requests_per_minute(principal)
        if rate is not None:
            minute = now.strftime("%Y-%m-%dT%H:%M")
            remaining = self._left(principal, "requests", minute, rate, fresh)
            states.append(LimitState(MINUTE, rate, 60, remaining, max(1, 60 - now.second)))
        return states

    def _left(self, principal: str, kind: str, window: str, limit: int, fresh: bool) -> int | None:
        ledger = ledger_id(principal, kind, window)
        left = None if fresh else self.allowances.left(ledger, limit)
        if left is None and not self.delivery.down():
            meta = {"principal": principal, "kind": kind, "window": window}
            try:
                left = self.allowances.left(ledger, limit, window, meta)
            except Exception as exc:  # not known now: the field leaves it out
                self.delivery.mark_down(exc)
                log_event("WARNING", "usage: quota ledger not read", error=repr(exc))
        return left

    def today(self, principal: str) -> dict:
        """The caller's counters of the current UTC day, per service and in all, read from
        the store (raises :class:`StoreUnavailable` when it cannot answer)."""
        day = utc_day(datetime.now(UTC))
        try:
            rows = self.store.day_totals(principal, day)
        except Exception as exc:  # SQLite's errors too: the caller is told to come back
            if isinstance(exc, StoreUnavailable):
                raise
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        services = {str(r["service"]): {c: int(r.get(c) or 0) for c in COUNTERS} for r in rows}
        total = {c: sum(s[c] for s in services.values()) for c in COUNTERS}
        return {"day": day, "total": total, "services": services}

    # -- quotas --------------------------------------------------------------------------

    def _check_rate(self, principal: str, now: datetime) -> None:
        rate = self.policy.requests_per_minute(principal)
        if rate is None:
            return
        minute = now.strftime("%Y-%m-%dT%H:%M")
        ledger = ledger_id(principal, "requests", minute)
        meta = {"principal": principal, "kind": "requests", "window": minute}
        if not self._take(ledger, minute, 1, rate, meta, principal):
            retry_after = max(1, 60 - now.second)
            raise QuotaExceeded(
                f"request rate of {rate} per minute reached for {principal}; "
                f"try again in {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )

    def _take(
        self, ledger: str, window: str, n: int, limit: int, meta: dict, principal: str
    ) -> bool:
        """From the ledger; when the store cannot answer, serve unless it was used up.

        Raises QuotaExceeded (``Retry-After: 1``) when other instances won every append
        for ``CLAIM_BUDGET_S``.
        """
        base = None
        if meta["kind"] == "images":

            def base() -> int:
                return self.store.daily_images(principal, window)

        if not self.delivery.down():
            try:
                return self.allowances.take(ledger, window, n, limit, meta, base)
            except Contention as exc:  # never serve what no block covers: ask for a retry
                log_event("WARNING", "usage: quota ledger busy; asking to retry", error=str(exc))
                raise QuotaExceeded(
                    f"too many requests of {principal} at once for its quota to keep up; "
                    "retry in 1 s",
                    headers={"Retry-After": "1"},
                ) from exc
            except Exception as exc:  # a broken store must not refuse work: serve, and say so
                self.delivery.mark_down(exc)
                log_event("ERROR", "usage: quota not checked; serving", error=repr(exc))
        return not self.allowances.exhausted(ledger, n, limit)

    def _daily_limit(self, principal: str) -> int | None:
        """A ``quotas`` entry in the store (cached ``quota_cache_s``), else the config's."""
        now = time.monotonic()
        cached = self._overrides.get(principal)
        if cached is None or cached[0] <= now:
            try:
                if self.delivery.down():
                    raise StoreUnavailable("recent failure")
                found, limit = self.store.quota_override(principal)
                cached = (now + self.settings.quota_cache_s, found, limit)
                self._overrides[principal] = cached
            except Exception:  # keep the last known value, else the config
                pass
        if cached is not None and cached[1]:
            return cached[2]
        return self.policy.configured_limit(principal)

    # -- shutdown and the spool ----------------------------------------------------------

    def drain_spool(self, budget_s: float) -> tuple[int, int]:
        """At shutdown: give back unused allowance, then send the spool; (sent, left)."""
        stop_at = time.monotonic() + budget_s
        try:
            self.allowances.give_back(budget_s / 2)
        except Exception as exc:  # what is not given back is only unused, never lost
            log_event("WARNING", "usage: allowance not given back", error=repr(exc))
        return self.delivery.drain(max(0.0, stop_at - time.monotonic()))

    def flush_spool(self, limit: int | None = None, budget_s: float | None = None) -> int:
        return self.delivery.flush(limit, budget_s)


__all__ = ["UsageRecorder", "log_event"]
