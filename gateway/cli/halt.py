"""One flag a whole batch shares: once a refusal means every further slide would be
refused too (the day's quota is used up, the credentials are rejected), nothing more is
sent and the slides not yet counted fail with that reason, to be sent again with
``--resume`` later."""

from __future__ import annotations

import threading

from gateway.cli.slides import SlideFailed

# Codes of answers that hold for every slide of the batch, not just the one refused.
BATCH_CODES = frozenset({"quota_exceeded", "unauthenticated", "forbidden"})


class Halt:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.reason: SlideFailed | None = None

    def after(self, error: str | None, code: str | None) -> None:
        """Called with each slide's outcome; halts the batch on a batch-wide refusal."""
        if code in BATCH_CODES:
            self.stop(f"not sent: an earlier slide was refused: {error}", code)

    def stop(self, message: str, code: str) -> None:
        """Send nothing more; the first reason given is the one slides fail with."""
        with self._lock:
            if self.reason is None:
                self.reason = SlideFailed(message, code)
                self._event.set()

    def check(self) -> None:
        """Raise the batch's reason if it was halted."""
        if self._event.is_set() and self.reason is not None:
            raise SlideFailed(str(self.reason), self.reason.code)

    def sleep(self, seconds: float) -> None:
        """Wait, but wake as soon as the batch is halted (and raise its reason)."""
        self._event.wait(seconds)
        self.check()
