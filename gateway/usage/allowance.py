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

A limit of at least 64 is split into up to eight parts of at least 32, each its own ledger;
every instance starts with a part of its own choosing and moves on to the others when it
runs out, so instances that start together race for eight entries instead of one.  The
parts add up to the limit, so the bound stays zero; a request's images may come from
several parts.  Appends that keep losing are retried for ``CLAIM_BUDGET_S`` with jittered
backoff; then :class:`Contention` is raised and the request is asked to retry a second
later (429 with ``Retry-After: 1``): nothing is ever served that no block covers.

Entry 0 of a daily ledger (of its part 0) is the base: the images the counters already
held when the ledger was started (records of that day written before ledgers existed), so
they count; it is written before any block, and later parts start with their share of
it (parts are filled in order).
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
SPREAD, MIN_PART = 8, 32  # a limit is split into up to 8 ledgers of at least 32 each
CLAIM_BUDGET_S = 2.0  # appends lost to other instances are retried this long
BACKOFF_S, BACKOFF_CAP_S = 0.005, 0.2  # the wait after a lost append: doubling, capped


class Contention(Exception):
    """Other instances won every append this request tried within ``CLAIM_BUDGET_S``."""


def parts(limit: int) -> list[int]:
    """The limits of a ledger's parts: they add up to ``limit``."""
    k = max(1, min(SPREAD, limit // MIN_PART))
    return [limit // k + (1 if i < limit % k else 0) for i in range(k)]


def part_names(ledger: str, sizes: list[int]) -> list[str]:
    """The ledgers of a limit's parts: the ledger itself when it is not split."""
    return [ledger] if len(sizes) == 1 else [f"{ledger}__{p}" for p in range(len(sizes))]


@dataclass
class _Ledger:
    window: str
    meta: dict[str, Any]  # principal, kind, window: written with each entry
    index: int = -1  # the last entry read
    total: int = 0  # the sum of entries 0..index
    held: int = 0  # taken by this process and not used yet
    first: int | None = None  # the amount of entry 0 (the base, in part 0)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _part_base(first: int, sizes: list[int], part: int) -> Callable[[], int]:
    """A later part's share of the base (all of it is entry 0 of part 0): the parts are
    filled in order, so what part 0 cannot hold counts against the next ones."""
    before = sum(sizes[:part])
    return lambda: min(sizes[part], max(0, first - before))


class Allowances:
    def __init__(self, store: UsageStore, home: int | None = None) -> None:
        self.store = store
        self.home = random.randrange(SPREAD) if home is None else home  # the part tried first
        self._lock = threading.Lock()
        self._ledgers: dict[str, _Ledger] = {}
        self.appends = 0  # entries this process appended (for the load simulation)

    def _ledger(self, ledger: str, window: str, meta: dict[str, Any]) -> _Ledger:
        with self._lock:
            state = self._ledgers.get(ledger)
            if state is None:
                # A past day or minute is over: what is held of it is worth nothing now.
                kind = meta.get("kind")
                for key in [
                    k
                    for k, v in self._ledgers.items()
                    if v.meta.get("kind") == kind and v.window < window
                ]:
                    del self._ledgers[key]
                state = self._ledgers[ledger] = _Ledger(window, meta)
            return state

    def _catch_up(self, ledger: str, state: _Ledger) -> None:
        for index, amount in self.store.entries_after(ledger, state.index):
            state.index, state.total = index, state.total + amount
            if index == 0:
                state.first = amount

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

        A large limit is split into parts, each its own ledger (``<ledger>__<part>``), so
        instances that start together do not all race for the same entry: each begins
        with its own home part and moves on to the others when that one runs out.
        Raises the store's errors, and :class:`Contention` when appends kept losing.
        """
        sizes = parts(limit)
        names = part_names(ledger, sizes)
        deadline = time.monotonic() + CLAIM_BUDGET_S
        taken: list[tuple[_Ledger, int]] = []
        need = n
        first = 0 if base is None else self._base(names[0], window, meta, base)
        try:
            for j in range(len(sizes)):
                part = (self.home + j) % len(sizes)
                state = self._ledger(names[part], window, meta)
                base_part = None if base is None or part == 0 else _part_base(first, sizes, part)
                got = self._take_part(names[part], state, need, sizes[part], deadline, base_part)
                if got:
                    taken.append((state, got))
                    need -= got
                if need == 0:
                    return True
        except BaseException:
            self._keep(taken)
            raise
        self._keep(taken)  # not enough anywhere: they serve this instance's next requests
        return False

    def _base(self, ledger: str, window: str, meta: dict[str, Any], base: Callable[[], int]) -> int:
        """Entry 0 of part 0: what was counted before the ledger began, read once and
        written before any block, so no image served from the ledger is in it."""
        state = self._ledger(ledger, window, meta)
        with state.lock:
            if state.first is None:
                self._catch_up(ledger, state)
            if state.first is None and state.index < 0:
                if self.store.append_entry(ledger, 0, base(), {**meta, "kind": "base"}):
                    self.appends += 1
                self._catch_up(ledger, state)
            return state.first or 0

    @staticmethod
    def _keep(taken: list[tuple[_Ledger, int]]) -> None:
        for state, got in taken:
            with state.lock:
                state.held += got

    def _take_part(
        self,
        ledger: str,
        state: _Ledger,
        n: int,
        limit: int,
        deadline: float,
        base: Callable[[], int] | None,
    ) -> int:
        """Up to ``n`` from one part: from what this instance holds, else a new block."""
        with state.lock:
            if state.held >= n:
                state.held -= n
                return n
            attempt = 0
            while True:
                self._catch_up(ledger, state)
                if state.index < 0 and base is not None:
                    amount = base()
                    if self.store.append_entry(ledger, 0, amount, {**state.meta, "kind": "base"}):
                        state.index, state.total = 0, amount
                        self.appends += 1
                        continue
                else:
                    free = limit - state.total
                    if free <= 0:  # what is held is all this part has left
                        got, state.held = state.held, 0
                        return got
                    size = min(free, max(n - state.held, math.ceil(free / SPLIT)))
                    meta = {**state.meta, "kind": "take"}
                    if self.store.append_entry(ledger, state.index + 1, size, meta):
                        self.appends += 1
                        state.index, state.total = state.index + 1, state.total + size
                        got = min(n, state.held + size)
                        state.held += size - got
                        return got
                if time.monotonic() > deadline:
                    raise Contention(f"appends to {ledger} kept losing to other instances")
                # Lost to another instance: spread the next tries (full jitter, doubling).
                time.sleep(random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_S * 2**attempt)))
                attempt += 1

    def exhausted(self, ledger: str, n: int, limit: int) -> bool:
        """From what was last read: the ledger cannot give ``n`` (for a store outage)."""
        sizes = parts(limit)
        left = 0
        with self._lock:
            for name, size in zip(part_names(ledger, sizes), sizes, strict=True):
                state = self._ledgers.get(name)
                if state is None:
                    return False
                left += state.held + max(0, size - state.total)
        return left < n

    def left(
        self, ledger: str, limit: int, window: str | None = None, meta: dict | None = None
    ) -> int | None:
        """What the ledger can still give this instance, as last read: what it holds plus
        what no instance has claimed yet.  Blocks other instances hold count as used, so it
        is never more than what is left (for the parts read); a part not read yet counts as
        whole.  None when no part was read.  With ``window`` and ``meta`` every part is read
        from the store first (a read per part)."""
        sizes = parts(limit)
        names = part_names(ledger, sizes)
        if window is not None:
            for name in names:
                state = self._ledger(name, window, meta or {})
                with state.lock:
                    self._catch_up(name, state)
        left, known = 0, False
        with self._lock:
            states = [self._ledgers.get(name) for name in names]
        for state, size in zip(states, sizes, strict=True):
            if state is None:
                left += size
                continue
            known = True
            with state.lock:
                left += state.held + max(0, size - state.total)
        return left if known else None

    def give(self, ledger: str, n: int) -> None:
        """A request that took ``n`` failed: they go back to what this instance holds."""
        with self._lock:
            states = [
                v for k, v in self._ledgers.items() if k == ledger or k.startswith(ledger + "__")
            ]
        if states:
            with states[0].lock:
                states[0].held += n

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
