"""When the CLI sends a slide again, and how long it waits first (no clock involved)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from gateway.cli.retry import RETRY_STATUSES, RetryPolicy, parse_retry_after


def test_only_busy_answers_are_retried() -> None:
    assert RETRY_STATUSES == {429, 503, 504}


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(first_backoff_s=1.0, max_backoff_s=30.0)
    rng = random.Random(7)
    for retry in range(10):
        ceiling = min(30.0, 2.0**retry)
        waits = [policy.backoff(retry, rng) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1  # jittered: clients that failed together spread out


def test_retry_after_is_honoured_never_sooner() -> None:
    policy = RetryPolicy(retries=3, max_wait_s=100.0)
    rng = random.Random(1)
    for _ in range(100):
        wait = policy.wait(0, 0.0, 7.0, rng)
        assert wait is not None and 7.0 <= wait <= 7.25


def test_retries_are_bounded_by_count_and_total_wait() -> None:
    policy = RetryPolicy(retries=3, max_wait_s=20.0)
    assert policy.wait(2, 0.0, 1.0) is not None
    assert policy.wait(3, 0.0, 1.0) is None  # the fourth retry is never made
    assert policy.wait(0, 15.0, 4.0) is not None
    assert policy.wait(0, 15.0, 6.0) is None  # would wait 21 s in all
    # A quota that resets at midnight: fail now rather than sleep for hours.
    assert policy.wait(0, 0.0, 8 * 3600.0) is None
    assert RetryPolicy(retries=0).wait(0, 0.0, None) is None


def test_retry_after_seconds_or_http_date() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("", now) is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
