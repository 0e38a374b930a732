"""Allowance ledgers: blocks taken by many instances never add up to more than the limit."""

from __future__ import annotations

import pytest
from helpers import in_threads

from gateway.usage import allowance
from gateway.usage.allowance import Allowances, Contention
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

    def client(i: int) -> None:
        mine = instances[i % 4]
        for _ in range(40):
            if mine.take("L", "w", 1, 60, META):
                served[i] += 1

    errors = in_threads(client, 16)
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


class LosingStore:
    """A store on which every append loses (another instance always wins) while ``lose``."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store, self.lose = store, True

    def entries_after(self, ledger, index):
        return self.store.entries_after(ledger, index)

    def append_entry(self, ledger, index, amount, meta):
        return False if self.lose else self.store.append_entry(ledger, index, amount, meta)


def test_appends_that_keep_losing_end_with_contention_and_nothing_taken(tmp_path, monkeypatch):
    monkeypatch.setattr(allowance, "CLAIM_BUDGET_S", 0.05)
    store = LosingStore(SQLiteStore(tmp_path / "u.sqlite3"))
    one = Allowances(store)
    with pytest.raises(Contention):
        one.take("L", "w", 2, 40, META)
    store.lose = False
    assert one.take("L", "w", 2, 40, META)
    assert _ledger_total(store.store, "L") == 2 + one._ledgers["L"].held


def test_a_large_limit_is_split_into_parts_that_add_up_to_it(tmp_path):
    from gateway.usage.allowance import parts

    assert parts(60) == [60] and parts(64) == [32, 32] and sum(parts(1001)) == 1001
    assert len(parts(10**6)) == 8
    instances = [Allowances(SQLiteStore(tmp_path / "u.sqlite3"), home=h) for h in range(8)]
    served = [0] * 8

    def client(i: int) -> None:
        while instances[i].take("L", "w", 1, 1000, META):
            served[i] += 1

    errors = in_threads(client, 8)
    assert errors == []
    assert sum(served) == 1000  # every client ran until refused: nothing left unused
    store = instances[0].store
    assert sum(_ledger_total(store, f"L__{p}") for p in range(8)) == 1000


def test_one_request_may_take_from_several_parts(tmp_path):
    (one,) = _instances(tmp_path, 1)
    assert one.take("L", "w", 40, 64, META)  # 32 from one part, 8 from the other
    assert one.take("L", "w", 24, 64, META)
    assert not one.take("L", "w", 1, 64, META)


def test_a_busy_ledger_asks_the_caller_to_retry_in_a_second(tmp_path, monkeypatch):
    from usage_helpers import make_recorder, serve

    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    monkeypatch.setattr(allowance, "CLAIM_BUDGET_S", 0.05)
    raw = {
        "usage": {"sqlite": {"path": str(tmp_path / "u.sqlite3")}},
        "quotas": {"default": {"daily_images": 100}},
    }
    recorder = make_recorder(raw)
    recorder.allowances.store = LosingStore(recorder.store)
    refused = serve(recorder, principal="key:lab")
    assert (refused.status, refused.error_code, refused.retry_after) == (429, "quota_exceeded", "1")
    recorder.allowances.store.lose = False
    assert serve(recorder, principal="key:lab").status == 200


def test_ledgers_of_past_windows_are_dropped_and_others_kept(tmp_path):
    (one,) = _instances(tmp_path, 1)
    minute = {"principal": "key:lab", "kind": "requests"}
    assert one.take("D", "2026-01-01", 1, 40, META)  # a day ledger, holding a block
    assert one.take("M1", "2026-01-01T10:00", 1, 40, {**minute, "window": "2026-01-01T10:00"})
    assert one.take("M2", "2026-01-01T10:01", 1, 40, {**minute, "window": "2026-01-01T10:01"})
    assert set(one._ledgers) == {"D", "M2"}  # the past minute went, the day stayed
    assert one._ledgers["D"].held == 4


def test_the_base_is_counted_once_across_parts(tmp_path):
    a = Allowances(SQLiteStore(tmp_path / "u.sqlite3"), home=2)
    b = Allowances(SQLiteStore(tmp_path / "u.sqlite3"), home=1)
    served = sum(a.take("L", "w", 1, 128, META, base=lambda: 0) for _ in range(5))
    # the counters now hold a's 5 images; b must not count them again as a base
    served += sum(b.take("L", "w", 1, 128, META, base=lambda: 5) for _ in range(200))
    assert served == 128 - a._ledgers["L__2"].held
    c = Allowances(SQLiteStore(tmp_path / "v.sqlite3"), home=3)
    legacy = sum(c.take("L", "w", 1, 128, META, base=lambda: 40) for _ in range(200))
    assert legacy == 128 - 40  # part 0 holds 32 of the base, part 1 the other 8
