"""Allowance ledgers: blocks taken by many instances never add up to more than the limit."""

from __future__ import annotations

import threading

import pytest

from gateway.usage.allowance import Allowances
from gateway.usage.sqlite_store import SQLiteStore

META = {"principal": "key:lab", "kind": "images", "window": "2026-01-01"}


def _instances(tmp_path, n: int) -> list[Allowances]:
    """``n`` instances, each with its own connection to one store."""
    return [Allowances(SQLiteStore(tmp_path / "u.sqlite3")) for _ in range(n)]


def _ledger_total(store: SQLiteStore, ledger: str) -> int:
    return sum(amount for _, amount in store.entries_after(ledger, -1))


def test_one_instance_takes_blocks_and_serves_exactly_the_limit(tmp_path):
    (one,) = _instances(tmp_path, 1)
    granted = sum(one.take("L", "w", 1, 60, META) for _ in range(80))
    assert granted == 60
    assert one.appends < 60  # blocks, not one entry per request
    assert _ledger_total(one.store, "L") == 60


def test_concurrent_instances_never_exceed_the_limit(tmp_path):
    instances = _instances(tmp_path, 4)
    served = [0] * 16
    errors: list[BaseException] = []

    def client(i: int) -> None:
        mine = instances[i % 4]
        try:
            for _ in range(40):
                if mine.take("L", "w", 1, 60, META):
                    served[i] += 1
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert sum(served) <= 60
    held = sum(s.held for a in instances for s in a._ledgers.values())
    assert sum(served) + held == _ledger_total(instances[0].store, "L") <= 60


def test_requests_larger_than_a_block_and_refusals_keep_what_is_held(tmp_path):
    (one,) = _instances(tmp_path, 1)
    assert one.take("L", "w", 2, 5, META) and one.take("L", "w", 2, 5, META)
    assert not one.take("L", "w", 2, 5, META)  # 4 + 2 > 5
    assert one.take("L", "w", 1, 5, META)  # the one left is still there
    assert not one.take("L", "w", 1, 5, META)


def test_failed_requests_give_back_and_stopping_instances_return_what_they_hold(tmp_path):
    a, b = _instances(tmp_path, 2)
    assert a.take("L", "w", 1, 40, META)  # a holds a block of 5, uses 1
    a.give("L", 1)  # that request failed
    assert a._ledgers["L"].held == 5
    assert a.give_back(budget_s=5) == 5
    assert _ledger_total(a.store, "L") == 0
    assert sum(b.take("L", "w", 1, 40, META) for _ in range(50)) == 40


def test_the_base_entry_counts_what_was_recorded_before(tmp_path):
    (one,) = _instances(tmp_path, 1)
    assert one.take("D", "w", 1, 10, META, base=lambda: 8)
    assert one.take("D", "w", 1, 10, META, base=lambda: 8)
    assert not one.take("D", "w", 1, 10, META, base=lambda: 8)


class FlakyStore:
    """Every append loses the race (another instance always wins)."""

    def entries_after(self, ledger, index):
        return []

    def append_entry(self, ledger, index, amount, meta):
        return False


def test_an_append_that_always_loses_ends_with_contention():
    from gateway.usage.allowance import Contention

    with pytest.raises(Contention):
        Allowances(FlakyStore()).take("L", "w", 1, 10, META)
