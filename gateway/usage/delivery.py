"""Getting records into the store when it fails: the outage breaker and the spool.

When a commit fails or is slow, the request is still served: the record is logged as a
structured WARNING line and kept in the local spool, and for ``retry_after_s`` further
records go straight to the spool instead of waiting on a dead server.  Later requests send
the spool once the store answers; a record's id is its request id and it is created with a
precondition together with its counter increments, so each record counts exactly once.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from gateway.usage.records import UsageRecord
from gateway.usage.settings import UsageSettings
from gateway.usage.spool import Spool
from gateway.usage.stores import UsageStore


def log_event(severity: str, message: str, **fields: Any) -> None:
    """One JSON line on stdout: Cloud Logging reads ``severity`` and ``message`` from it."""
    line = {"severity": severity, "message": message, **fields}
    sys.stdout.write(json.dumps(line, default=str, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class Delivery:
    def __init__(self, store: UsageStore, settings: UsageSettings) -> None:
        self.store = store
        self.settings = settings
        self.spool = Spool(settings.spool_path)
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._flushing = threading.Lock()

    # -- the breaker ---------------------------------------------------------------------

    def down(self) -> bool:
        """The store failed less than ``retry_after_s`` ago: do not wait on it."""
        return time.monotonic() < self._down_until

    def mark_down(self, error: Exception) -> None:
        with self._lock:
            first = not self.down()
            self._down_until = time.monotonic() + self.settings.retry_after_s
        if first:
            log_event(
                "WARNING",
                f"usage: {self.store.name} unavailable; spooling records",
                error=str(error),
            )

    # -- writing -------------------------------------------------------------------------

    def write(self, record: UsageRecord) -> None:
        if self.down():
            self._to_spool(record, "usage store unavailable (recent failure)")
            return
        try:
            self.store.commit(record)
        except Exception as exc:
            self.mark_down(exc)
            self._to_spool(record, str(exc))

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
            f"usage: record not written to {self.store.name}" + ("; spooled" if spooled else ""),
            error=error,
            spooled=spooled,
            usage_record=record.to_json(),
        )

    def warm_and_flush(self) -> None:
        try:
            self.store.warm()
            # The request that flushes waits for it (nothing may outlive a response), so
            # it sends what fits in a small budget; later requests send the rest.
            self.flush(budget_s=self.settings.flush_budget_s)
        except Exception as exc:
            log_event("WARNING", "usage: warming/flushing failed", error=repr(exc))

    def drain(self, budget_s: float) -> tuple[int, int]:
        """At shutdown: send what the spool holds, within ``budget_s``; (sent, left).

        The spool lives in the instance's ``/tmp``, which goes with it, so a recent failure
        does not stop one more try.  What is left was logged in full when it was spooled
        (``python -m gateway replay-usage`` stores it from the logs).
        """
        if not self.spool.exists():
            return 0, 0
        stop_at = time.monotonic() + budget_s
        with self._lock:
            self._down_until = 0.0
        sent = 0
        while self.spool.pending() and time.monotonic() < stop_at:
            n = self.flush(budget_s=max(0.0, stop_at - time.monotonic()))
            if n == 0:
                break
            sent += n
        return sent, self.spool.pending()

    def flush(self, limit: int | None = None, budget_s: float | None = None) -> int:
        """Send up to ``limit`` spooled records; returns how many went.

        Stops at the first failure, and starts no new commit after ``budget_s``, so a
        request that flushes is held at most the budget plus one commit.
        """
        stop_at = None if budget_s is None else time.monotonic() + budget_s
        if self.down() or not self.spool.exists() or self.spool.pending() == 0:
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
                    self.store.commit(record, spooled=True)
                except Exception as exc:
                    self.spool.release([r.request_id for r in records[i:]])
                    self.mark_down(exc)
                    break
                self.spool.remove(record.request_id)  # written now, or already there before
                sent += 1
        finally:
            self._flushing.release()
        return sent
