"""Quota accounting that holds across instances: allowances taken in blocks from a ledger.

A limit (a principal's images of one UTC day, or its requests of one UTC minute) has a
ledger in the usage store: an append-only log whose entry ``i`` is created only if it does
not exist yet.  An instance that needs allowance reads the entries it has not seen, and if
the limit minus their sum leaves enough, appends a block for itself at the next index.  Two
instances racing for the same index cannot both win, so the blocks handed out never add up
to more than the limit, whatever the number of instances: the overshoot bound is zero.

Blocks are an eighth of what is left (at least the request's need), so a busy caller
appends a ledger entry once per many requests early in the day and the blocks shrink to
single requests as the limit nears: what instances hold unused when the limit is reached
is at most about one small block each.  A request that fails gives its images back to its
instance's block; an instance that stops gives back what it holds (a negative entry).

Entry 0 of a daily ledger is the base: the images the counters already held when the
ledger was started (records of that day written before ledgers existed), so they count.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.usage.stores import UsageStore

SPLIT = 8  # a block is this fraction of what is left
MAX_ATTEMPTS = 12  # appends lost to other instances before giving up on this request


class Contention(Exception):
    """Other instances won every append this request tried."""


@dataclass
class _Ledger:
    window: str
    meta: dict[str, Any]  # principal, kind, window: written with each entry
    index: int = -1  # the last entry read
    total: int = 0  # the sum of entries 0..index
    held: int = 0  # taken by this process and not used yet
    lock: threading.Lock = field(default_factory=threading.Lock)


class Allowances:
    def __init__(self, store: UsageStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._ledgers: dict[str, _Ledger] = {}
        self.appends = 0  # entries this process appended (for the load simulation)

    def _ledger(self, ledger: str, window: str, meta: dict[str, Any]) -> _Ledger:
        with self._lock:
            state = self._ledgers.get(ledger)
            if state is None:
                # Ledgers of past windows with nothing held are done with.
                for key in [
                    k for k, v in self._ledgers.items() if v.window < window and not v.held
                ]:
                    del self._ledgers[key]
                state = self._ledgers[ledger] = _Ledger(window, meta)
            return state

    def _catch_up(self, ledger: str, state: _Ledger) -> None:
        for index, amount in self.store.entries_after(ledger, state.index):
            state.index, state.total = index, state.total + amount

    def take(
        self,
        ledger: str,
        window: str,
        n: int,
        limit: int,
        meta: dict[str, Any],
        base: Callable[[], int] | None = None,
    ) -> bool:
        """Take ``n`` from the ledger's ``limit``; False when it does not have them.

        Raises the store's errors, and :class:`Contention` after ``MAX_ATTEMPTS`` lost races.
        """
        state = self._ledger(ledger, window, meta)
        with state.lock:
            if state.held >= n:
                state.held -= n
                return True
            for attempt in range(MAX_ATTEMPTS):
                self._catch_up(ledger, state)
                if state.index < 0 and base is not None:
                    amount = base()
                    if self.store.append_entry(ledger, 0, amount, {**meta, "kind": "base"}):
                        state.index, state.total = 0, amount
                        self.appends += 1
                    continue
                need = n - state.held
                free = limit - state.total
                if free < need:
                    return False
                size = min(free, max(need, math.ceil(free / SPLIT)))
                if self.store.append_entry(ledger, state.index + 1, size, {**meta, "kind": "take"}):
                    self.appends += 1
                    state.index, state.total = state.index + 1, state.total + size
                    state.held += size - n
                    return True
                time.sleep(random.uniform(0, 0.005 * (attempt + 1)))  # spread the next try
        raise Contention(f"{MAX_ATTEMPTS} appends to {ledger} lost to other instances")

    def exhausted(self, ledger: str, n: int, limit: int) -> bool:
        """From what was last read: the ledger cannot give ``n`` (for a store outage)."""
        with self._lock:
            state = self._ledgers.get(ledger)
        return state is not None and state.held < n and limit - state.total < n - state.held

    def give(self, ledger: str, n: int) -> None:
        """A request that took ``n`` failed: they go back to this process's block."""
        with self._lock:
            state = self._ledgers.get(ledger)
        if state is not None:
            with state.lock:
                state.held += n

    def give_back(self, budget_s: float) -> int:
        """At shutdown: return what this process holds to the ledgers; how much went back."""
        stop_at = time.monotonic() + budget_s
        returned = 0
        with self._lock:
            held = [(k, v) for k, v in self._ledgers.items() if v.held > 0]
        for ledger, state in held:
            with state.lock:
                while state.held > 0 and time.monotonic() < stop_at:
                    self._catch_up(ledger, state)
                    meta = {**state.meta, "kind": "give_back"}
                    if self.store.append_entry(ledger, state.index + 1, -state.held, meta):
                        self.appends += 1
                        state.index, state.total = state.index + 1, state.total - state.held
                        returned += state.held
                        state.held = 0
        return returned
