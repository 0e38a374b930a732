"""Idle workers give freed memory back (gateway.memory.IdleTrim).

The trimmer's clock is a fake one the test moves by hand, so what is checked (never while
a request is in progress, once per idle spell, put off by every request) does not depend on
how fast a busy machine runs the test.
"""

from __future__ import annotations

import threading
import time

import pytest
from helpers import WAIT_S, wait_until

from gateway import memory
from gateway.memory import IdleTrim, _malloc_trim


class FakeClock:
    """Stands in for the ``time`` module inside gateway.memory: ``sleep`` returns when the
    test has moved the clock far enough (or after WAIT_S of real time, as a safety net)."""

    def __init__(self) -> None:
        self.now = 1024.0  # whole and binary fractions of a second: exact sums
        self._moved = threading.Condition()

    def monotonic(self) -> float:
        with self._moved:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._moved:
            until = self.now + seconds
            self._moved.wait_for(lambda: self.now >= until, timeout=WAIT_S)

    def advance(self, seconds: float) -> None:
        with self._moved:
            self.now += seconds
            self._moved.notify_all()


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(memory, "time", fake)
    return fake


def _settle() -> None:
    """Real time for the trimmer's thread to act on what just happened, if it would."""
    time.sleep(0.2)


def test_trims_once_after_the_last_request_and_never_while_busy(clock):
    calls = []
    trim = IdleTrim(after_s=2.0, trim=lambda: calls.append(clock.monotonic()))
    trim.started()
    trim.finished()  # the trimmer's thread starts: a trim is due in 2 s...
    trim.started()  # ...but a request comes first
    clock.advance(60.0)
    _settle()
    assert calls == []  # never while a request is in progress
    trim.started()
    trim.finished()
    clock.advance(60.0)
    _settle()
    assert calls == []  # one still in progress
    trim.finished()
    done = clock.monotonic()
    clock.advance(1.5)
    _settle()
    assert calls == []  # not idle for after_s yet
    clock.advance(0.5)
    wait_until(lambda: len(calls) == 1, "the trim")
    assert calls[0] >= done + 2.0
    clock.advance(60.0)
    _settle()
    assert len(calls) == 1  # once per idle spell, not repeatedly
    trim.started()
    trim.finished()
    clock.advance(2.0)
    wait_until(lambda: len(calls) == 2, "the trim")


def test_requests_that_keep_coming_put_the_trim_off(clock):
    calls = []
    trim = IdleTrim(after_s=0.25, trim=lambda: calls.append(1))
    for _ in range(32):  # a request every 1/32 s: never idle for 0.25 s
        trim.started()
        trim.finished()
        clock.advance(0.03125)
    _settle()
    assert calls == []
    clock.advance(0.25)
    wait_until(lambda: calls == [1], "the trim")


def test_concurrent_requests_are_counted(clock):
    calls = []
    trim = IdleTrim(after_s=0.125, trim=lambda: calls.append(1))
    all_started = threading.Barrier(9)

    def request() -> None:
        trim.started()
        all_started.wait()
        trim.finished()

    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    all_started.wait()
    clock.advance(1.0)  # while they are all in progress
    for t in threads:
        t.join()
    clock.advance(0.125)
    wait_until(lambda: calls == [1], "the trim")
    clock.advance(1.0)
    _settle()
    assert calls == [1]


def test_glibc_trim_is_found_here():
    assert _malloc_trim() is not None  # the machines this runs on use glibc
