"""Freed memory goes back to the system once a worker has been idle for a moment.

``serving.limit_heap_growth`` lets each malloc arena keep a pad of freed memory, because
refaulting libjpeg's buffers on every request doubled the cost of cutting a slide.  Under
load that pad is what keeps requests fast; once the traffic stops it is only resident
memory (up to 16 MiB per arena, four arenas per worker), and how much of it each arena
happens to hold decides the idle figure.  ``malloc_trim`` after ``IDLE_TRIM_AFTER_S``
without a request hands it back, so an idle worker holds what it uses, whatever the burst
before looked like.  A steady stream of requests never waits for it.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable

IDLE_TRIM_AFTER_S = 2.0


def _malloc_trim() -> Callable[[], object] | None:
    try:
        libc = ctypes.CDLL("libc.so.6")  # glibc only; elsewhere there is nothing to trim
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return lambda: trim(0)


class IdleTrim:
    """Counts requests in progress; trims once after ``after_s`` with none."""

    def __init__(self, after_s: float = IDLE_TRIM_AFTER_S, trim=None) -> None:
        self.after_s = after_s
        self._trim = trim if trim is not None else _malloc_trim()
        self._lock = threading.Lock()
        self._busy = 0
        self._last_done = time.monotonic()
        self._trimmed = True  # nothing to give back before the first request
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None

    def started(self) -> None:
        with self._lock:
            self._busy += 1
            self._trimmed = False

    def finished(self) -> None:
        with self._lock:
            self._busy -= 1
            self._last_done = time.monotonic()
            if self._busy or self._trim is None:
                return
            if self._thread is None:  # started lazily: in the worker, not before a fork
                self._thread = threading.Thread(target=self._run, name="idle-trim", daemon=True)
                self._thread.start()
        self._idle.set()

    def _due_in(self) -> float | None:
        """Seconds until a trim is due, 0 when due now, None when there is nothing to do."""
        with self._lock:
            if self._busy or self._trimmed:
                return None
            due = self._last_done + self.after_s - time.monotonic()
            if due <= 0:
                self._trimmed = True
                return 0.0
            return due

    def _run(self) -> None:
        while True:
            self._idle.wait()
            self._idle.clear()
            while (due := self._due_in()) is not None:
                if due == 0.0:
                    self._trim()
                    break
                time.sleep(due)


idle_trim = IdleTrim()
