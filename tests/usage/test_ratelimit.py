"""The RateLimit fields read back with a Structured Fields parser (RFC 9651), and what a
quota ledger tells an instance is left of it."""

from __future__ import annotations

import http_sf

from gateway.usage.allowance import Allowances
from gateway.usage.ratelimit import DAILY, MINUTE, LimitState, headers
from gateway.usage.sqlite_store import SQLiteStore


def test_the_fields_are_lists_of_named_policies():
    states = [LimitState(DAILY, 500, 86400, 123, 3600), LimitState(MINUTE, 60, 60, 59, 12)]
    out = headers(states)
    assert out["RateLimit-Policy"] == '"daily";q=500;w=86400, "minute";q=60;w=60'
    assert out["RateLimit"] == '"daily";r=123;t=3600, "minute";r=59;t=12'
    policy = http_sf.parse(out["RateLimit-Policy"].encode(), tltype="list")
    assert policy == [("daily", {"q": 500, "w": 86400}), ("minute", {"q": 60, "w": 60})]
    left = http_sf.parse(out["RateLimit"].encode(), tltype="list")
    assert left == [("daily", {"r": 123, "t": 3600}), ("minute", {"r": 59, "t": 12})]


def test_an_unknown_remaining_is_left_out_and_no_policy_sends_nothing():
    out = headers([LimitState(DAILY, 5, 86400, None, 10), LimitState(MINUTE, 60, 60, 0, 3)])
    assert http_sf.parse(out["RateLimit"].encode(), tltype="list") == [("minute", {"r": 0, "t": 3})]
    assert "RateLimit" not in headers([LimitState(DAILY, 5, 86400, None, 10)])
    assert headers([]) == {}


def test_what_is_left_counts_other_instances_claims_as_used(tmp_path):
    store = SQLiteStore(tmp_path / "usage.sqlite3")
    meta = {"principal": "key:a", "kind": "requests", "window": "w"}
    mine, theirs = Allowances(store, home=0), Allowances(store, home=0)
    assert mine.left("L", 40) is None  # never read: not known
    assert mine.left("L", 40, "w", meta) == 40  # read: nothing claimed
    assert mine.take("L", "w", 1, 40, meta)  # claims a block of 5, uses 1
    assert mine.left("L", 40) == 39
    assert theirs.take("L", "w", 1, 40, meta)  # another instance claims its block
    assert mine.left("L", 40) == 39  # not read since
    assert mine.left("L", 40, "w", meta) == 39 - 5  # its whole block counts as used
    assert theirs.left("L", 40) == 4 + 30  # its own view: what it holds, and the unclaimed
