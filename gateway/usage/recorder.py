"""The per-request usage recorder: quota check before the backend, record before the response.

Firestore work overlaps the request instead of adding to it: ``begin`` starts, in a small
thread pool, warming the client, reading the caller's counters for the quota and flushing
spooled records; ``finish`` waits for those and commits this request's record with its
counters in one short-deadline commit.  Nothing runs after ``finish`` returns (Cloud
Functions starves the CPU once the response is sent).

When Firestore fails or is slow, the request is still served: the record is logged as a
structured WARNING line and kept in the local spool, and for ``retry_after_s`` further
records go straight to the spool instead of waiting on a dead server.  Later requests send
the spool once Firestore answers; a record's id is its request id and it is created with a
precondition together with its counter increments, so each record counts exactly once.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.config import Config
from gateway.context import RequestContext
from gateway.errors import QuotaExceeded
from gateway.usage.quotas import QuotaPolicy
from gateway.usage.records import (
    UsageRecord,
    record_from_context,
    seconds_until_utc_day_end,
    utc_day,
)
from gateway.usage.settings import UsageSettings
from gateway.usage.spool import Spool
from gateway.usage.sqlite_store import SQLiteStore

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="usage")
        return _pool


def log_event(severity: str, message: str, **fields: Any) -> None:
    """One JSON line on stdout: Cloud Logging reads ``severity`` and ``message`` from it."""
    line = {"severity": severity, "message": message, **fields}
    sys.stdout.write(json.dumps(line, default=str, separators=(",", ":")) + "\n")
    sys.stdout.flush()


@dataclass
class _Pending:
    """What ``begin`` started for one request."""

    day: str
    quota_read: Future | None = None
    background: list[Future] = field(default_factory=list)
    reserved: int = 0  # images counted as in flight by check_quota


class UsageRecorder:
    def __init__(self, config: Config, settings: UsageSettings, policy: QuotaPolicy) -> None:
        self.config = config
        self.settings = settings
        self.policy = policy
        self.remote = settings.firestore is not None
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._in_flight: dict[tuple[str, str], int] = {}
        self._recorded: dict[tuple[str, str], int] = {}  # images this process stored
        self._last_used: dict[tuple[str, str], tuple[int, int]] = {}
        self._overrides: dict[str, tuple[float, bool, int | None]] = {}
        self._down_until = 0.0
        self._flushing = threading.Lock()
        self._sqlite: SQLiteStore | None = None
        self._firestore: Any = None
        self._spool: Spool | None = None

    # -- stores, created on first use --------------------------------------------------

    @property
    def sqlite(self) -> SQLiteStore:
        if self._sqlite is None:
            self._sqlite = SQLiteStore(self.settings.sqlite_path, self.settings.prefix)
        return self._sqlite

    @property
    def firestore(self) -> Any:
        if self._firestore is None:
            from gateway.usage.firestore_store import FirestoreStore  # deferred: heavy import

            self._firestore = FirestoreStore(self.config, self.settings)
        return self._firestore

    @property
    def spool(self) -> Spool:
        if self._spool is None:
            self._spool = Spool(self.settings.spool_path)
        return self._spool

    def _firestore_down(self) -> bool:
        return time.monotonic() < self._down_until

    def _mark_down(self, error: Exception) -> None:
        with self._lock:
            first = not self._firestore_down()
            self._down_until = time.monotonic() + self.settings.retry_after_s
        if first:
            log_event("WARNING", "usage: Firestore unavailable; spooling records", error=str(error))

    # -- hooks ---------------------------------------------------------------------------

    def begin(self, ctx: RequestContext) -> None:
        try:
            pending = _Pending(day=utc_day(datetime.now(UTC)))
            with self._lock:
                self._pending[ctx.request_id] = pending
            if not self.remote:
                return
            pool = _executor()
            if self.policy.enabled:
                pending.quota_read = pool.submit(self._read_quota, ctx.principal, pending.day)
            if not self._firestore_down():
                pending.background.append(pool.submit(self._warm_and_flush))
        except Exception as exc:  # usage must never break a request
            log_event("ERROR", "usage: begin failed", error=repr(exc), request_id=ctx.request_id)

    def check_quota(self, ctx: RequestContext, images: int) -> None:
        if not self.policy.enabled:
            return
        with self._lock:
            pending = self._pending.get(ctx.request_id)
        if pending is None:  # begin was not called: behave as if it had been
            self.begin(ctx)
            with self._lock:
                pending = self._pending.get(ctx.request_id)
        day = pending.day if pending else utc_day(datetime.now(UTC))
        try:
            limit, used = self._limit_and_use(ctx.principal, day, pending)
        except Exception as exc:  # a broken store must not refuse work: serve, and say so
            log_event("ERROR", "usage: quota check failed", error=repr(exc))
            limit, used = None, 0
        if limit is None:
            self._reserve(ctx.principal, day, pending, images)
            return
        key = (ctx.principal, day)
        with self._lock:
            total = used + self._in_flight.get(key, 0)
            if total + images > limit:
                retry_after = seconds_until_utc_day_end()
                raise QuotaExceeded(
                    f"daily image quota of {limit} reached for {ctx.principal}; "
                    f"it resets at 00:00 UTC, in {retry_after} s",
                    headers={"Retry-After": str(retry_after)},
                )
            self._in_flight[key] = self._in_flight.get(key, 0) + images
            if pending is not None:
                pending.reserved += images

    def finish(self, ctx: RequestContext) -> None:
        try:
            with self._lock:
                pending = self._pending.pop(ctx.request_id, None)
            record = record_from_context(ctx)
            if pending is not None:
                self._wait(pending)
            try:
                self._write(record)
            finally:
                if pending is not None:
                    self._release(ctx.principal, pending)
        except Exception as exc:  # usage must never break a request
            log_event("ERROR", "usage: finish failed", error=repr(exc), request_id=ctx.request_id)

    # -- quota ---------------------------------------------------------------------------

    def _read_quota(self, principal: str, day: str) -> tuple[bool, int | None, int | None]:
        """(override found, override limit, images used today) from the store.

        "Used" is the stored count plus what this process stored since the read began, so
        a request recorded between this read and the check is not missed (one recorded
        while the read runs may count twice: the safe side).
        """
        found, override = self._override(principal)
        key = (principal, day)
        with self._lock:
            before = self._recorded.get(key, 0)
        if self.remote:
            if self._firestore_down():
                return found, override, None
            try:
                used = self.firestore.daily_images(principal, day)
            except Exception as exc:
                self._mark_down(exc)
                return found, override, None
        else:
            used = self.sqlite.daily_images(principal, day)
        with self._lock:
            self._last_used[key] = (used, before)
        return found, override, used

    def _override(self, principal: str) -> tuple[bool, int | None]:
        now = time.monotonic()
        cached = self._overrides.get(principal)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        try:
            if self.remote:
                if self._firestore_down():
                    raise RuntimeError("Firestore is down")
                found, limit = self.firestore.quota_override(principal)
            else:
                found, limit = self.sqlite.quota_override(principal)
        except Exception:  # keep the last known value, else the config
            if cached is not None:
                return cached[1], cached[2]
            return False, None
        self._overrides[principal] = (now + self.settings.quota_cache_s, found, limit)
        return found, limit

    def _limit_and_use(
        self, principal: str, day: str, pending: _Pending | None
    ) -> tuple[int | None, int]:
        result: tuple[bool, int | None, int | None] | None = None
        if pending is not None and pending.quota_read is not None:
            try:
                result = pending.quota_read.result(timeout=self.settings.read_timeout_s)
            except FutureTimeout:
                result = None
        elif not self.remote:
            result = self._read_quota(principal, day)
        found, override, used = (
            result if result is not None else (*self._override_cached(principal), None)
        )
        limit = override if found else self.policy.configured_limit(principal)
        with self._lock:  # the last count read (this one, or an older one if it failed)
            stored, before = self._last_used.get((principal, day), (0, 0))
            used = stored + self._recorded.get((principal, day), 0) - before
        if self.remote:
            try:
                used += self.spool.unflushed_images(principal, day)
            except Exception:
                pass
        return limit, used

    def _override_cached(self, principal: str) -> tuple[bool, int | None]:
        cached = self._overrides.get(principal)
        return (cached[1], cached[2]) if cached is not None else (False, None)

    def _reserve(self, principal: str, day: str, pending: _Pending | None, images: int) -> None:
        with self._lock:
            key = (principal, day)
            self._in_flight[key] = self._in_flight.get(key, 0) + images
            if pending is not None:
                pending.reserved += images

    def _release(self, principal: str, pending: _Pending) -> None:
        if not pending.reserved:
            return
        key = (principal, pending.day)
        with self._lock:
            left = self._in_flight.get(key, 0) - pending.reserved
            if left > 0:
                self._in_flight[key] = left
            else:
                self._in_flight.pop(key, None)

    # -- writing -------------------------------------------------------------------------

    def _wait(self, pending: _Pending) -> None:
        """Let the work begin() started end before the response: nothing may outlive it."""
        deadline = (
            time.monotonic() + 2 * self.settings.write_timeout_s + self.settings.read_timeout_s
        )
        futures = list(pending.background)
        if pending.quota_read is not None:
            futures.append(pending.quota_read)
        for fut in futures:
            try:
                fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # their failures are handled where they run
                pass

    def _write(self, record: UsageRecord) -> None:
        if not self.remote:
            try:
                if self.sqlite.commit(record):
                    self._stored(record)
            except Exception as exc:
                log_event(
                    "WARNING",
                    "usage: record not stored in SQLite",
                    error=repr(exc),
                    usage_record=record.to_json(),
                )
            return
        if not self._firestore_down():
            try:
                if self.firestore.commit(record):
                    self._stored(record)
                return
            except Exception as exc:
                self._mark_down(exc)
                error = str(exc)
        else:
            error = "Firestore unavailable (recent failure)"
        self._to_spool(record, error)

    def _stored(self, record: UsageRecord) -> None:
        if record.images:
            key = (record.principal, record.day)
            with self._lock:
                self._recorded[key] = self._recorded.get(key, 0) + record.images

    def _to_spool(self, record: UsageRecord, error: str) -> None:
        spooled = False
        try:
            if self.spool.pending() < self.settings.spool_max_records:
                self.spool.add(record)
                spooled = True
            else:
                error = f"{error}; spool full ({self.settings.spool_max_records} records)"
        except Exception as exc:  # the log line below still carries the record
            error = f"{error}; spool: {exc!r}"
        log_event(
            "WARNING",
            "usage: record not written to Firestore" + ("; spooled" if spooled else ""),
            error=error,
            spooled=spooled,
            usage_record=record.to_json(),
        )

    def _warm_and_flush(self) -> None:
        try:
            self.firestore.warm()
            # The request that flushes waits for it (nothing may outlive a response), so
            # it sends what fits in a small budget; later requests send the rest.
            self.flush_spool(budget_s=self.settings.flush_budget_s)
        except Exception as exc:
            log_event("WARNING", "usage: warming/flushing failed", error=repr(exc))

    def drain_spool(self, budget_s: float) -> tuple[int, int]:
        """At shutdown: send what the spool holds, within ``budget_s``; (sent, left).

        The spool lives in the instance's ``/tmp``, which goes with it, so a recent failure
        does not stop one more try.  What is left was logged in full when it was spooled
        (``python -m gateway replay-usage`` stores it from the logs).
        """
        if not self.remote or not self.spool.exists():
            return 0, 0
        stop_at = time.monotonic() + budget_s
        with self._lock:
            self._down_until = 0.0
        sent = 0
        while self.spool.pending() and time.monotonic() < stop_at:
            n = self.flush_spool(budget_s=max(0.0, stop_at - time.monotonic()))
            if n == 0:
                break
            sent += n
        return sent, self.spool.pending()

    def flush_spool(self, limit: int | None = None, budget_s: float | None = None) -> int:
        """Send up to ``limit`` spooled records; returns how many went.

        Stops at the first failure, and starts no new commit after ``budget_s``, so a
        request that flushes is held at most the budget plus one commit.
        """
        stop_at = None if budget_s is None else time.monotonic() + budget_s
        if not self.remote or self._firestore_down() or not self.spool.exists():
            return 0
        if self.spool.pending() == 0:
            return 0
        if not self._flushing.acquire(blocking=False):  # one flusher per process is plenty
            return 0
        sent = 0
        try:
            records = self.spool.claim(limit or self.settings.flush_batch)
            for i, record in enumerate(records):
                if stop_at is not None and time.monotonic() > stop_at:
                    self.spool.release([r.request_id for r in records[i:]])
                    break
                try:
                    applied = self.firestore.commit(record, spooled=True)
                except Exception as exc:
                    self.spool.release([r.request_id for r in records[i:]])
                    self._mark_down(exc)
                    break
                self.spool.remove(record.request_id)  # written now, or already there before
                if applied:
                    self._stored(record)
                sent += 1
        finally:
            self._flushing.release()
        return sent
