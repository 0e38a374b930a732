"""The process's decode budget as a request's deadline sees it."""

from __future__ import annotations

import threading
import time

from gateway.pipeline.decode_budget import DecodeBudget, Overloaded


def test_the_wait_for_decode_memory_ends_at_the_requests_deadline():
    """A request whose deadline comes first does not wait the whole ``decode_wait_s``."""
    budget = DecodeBudget(100, wait_s=600)
    outcome: list[str] = []

    def second() -> None:
        try:
            with budget.reserve(60, until=time.monotonic() + 0.05):
                outcome.append("reserved")
        except Overloaded:
            outcome.append("overloaded")

    with budget.reserve(60):
        waiting = threading.Thread(target=second, daemon=True)
        waiting.start()
        waiting.join(timeout=60)  # far sooner than the 600 s wait, or the thread is stuck
        assert outcome == ["overloaded"]
    assert budget.in_use == 0
