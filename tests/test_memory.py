"""Idle workers give freed memory back (gateway.memory.IdleTrim)."""

from __future__ import annotations

import threading
import time

from gateway.memory import IdleTrim, _malloc_trim


def _wait_for(cond, timeout_s: float = 5.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_trims_once_after_the_last_request_and_never_while_busy():
    calls = []
    trim = IdleTrim(after_s=0.05, trim=lambda: calls.append(time.monotonic()))
    trim.started()
    time.sleep(0.3)
    assert calls == []  # a request in progress: never
    trim.started()
    trim.finished()
    time.sleep(0.3)
    assert calls == []  # one still in progress
    done = time.monotonic()
    trim.finished()
    assert _wait_for(lambda: len(calls) == 1)
    assert calls[0] - done >= 0.05
    time.sleep(0.3)
    assert len(calls) == 1  # once per idle spell, not repeatedly
    trim.started()
    trim.finished()
    assert _wait_for(lambda: len(calls) == 2)


def test_requests_that_keep_coming_put_the_trim_off():
    calls = []
    trim = IdleTrim(after_s=0.2, trim=lambda: calls.append(1))
    stop = time.monotonic() + 0.6
    while time.monotonic() < stop:  # a request every 20 ms: never idle for 0.2 s
        trim.started()
        trim.finished()
        time.sleep(0.02)
    assert calls == []
    assert _wait_for(lambda: calls == [1])


def test_concurrent_requests_are_counted():
    calls = []
    trim = IdleTrim(after_s=0.05, trim=lambda: calls.append(1))
    barrier = threading.Barrier(8)

    def request() -> None:
        trim.started()
        barrier.wait()
        time.sleep(0.1)
        trim.finished()

    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _wait_for(lambda: calls == [1])
    time.sleep(0.2)
    assert calls == [1]


def test_glibc_trim_is_found_here():
    assert _malloc_trim() is not None  # the machines this runs on use glibc
