"""One flag a whole batch shares: once a refusal means every further slide would be
refused too (the day's quota is used up, the credentials are rejected), nothing more is
sent and the slides not yet counted fail with that reason, to be sent again with
``--resume`` later.  The refusal is kept once (:class:`Stop`), so a person is told it
once, with the time a quota resets, however many slides it stopped."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.cli.slides import SlideFailed

# Codes of answers that hold for every slide of the batch, not just the one refused.
BATCH_CODES = frozenset({"quota_exceeded", "unauthenticated", "forbidden"})
NOT_SENT = "not sent: the batch stopped"


@dataclass(frozen=True)
class Stop:
    """Why a batch stopped: the refusal as the gateway gave it, and when a quota resets."""

    message: str
    code: str
    resets_at: datetime | None = None  # aware; None: no reset time was given

    def describe(self, now: datetime | None = None) -> str:
        """The refusal in one line, a quota's reset as a time of day (local and UTC)."""
        if self.resets_at is None:
            return self.message
        return f"{_without_reset(self.message)}; it resets at {self.reset_time(now)}"

    def reset_time(self, now: datetime | None = None) -> str:
        """``01:00 (00:00 UTC)``, ``tomorrow``/a date when it is not today here."""
        assert self.resets_at is not None
        return time_of_day(self.resets_at, now)

    def resume_hint(self, resumable: bool, now: datetime | None = None) -> str:
        """How to finish the batch, for the summary line."""
        again = (
            "run the same command again with --resume"
            if resumable
            else "run it again (with --csv FILE or --json FILE, --resume sends only what is left)"
        )
        if self.resets_at is not None:
            return f"{again} after {self.reset_time(now)}"
        if self.code in ("unauthenticated", "forbidden"):
            return f"{again} once the credentials are accepted"
        return again


def time_of_day(when: datetime, now: datetime | None = None) -> str:
    """A moment as a person reads a clock: local time, with the UTC time when the local
    zone is not UTC, and the day when it is not today; to the second when it is near."""
    now = (now or datetime.now(UTC)).astimezone()
    near = abs((when - now).total_seconds()) < 120
    if not near:  # a quota resets on the minute; the answer's latency is not news
        when = (when + timedelta(seconds=30)).replace(second=0, microsecond=0)
    local = when.astimezone(now.tzinfo)
    fmt = "%H:%M:%S" if near else "%H:%M"
    text = local.strftime(fmt)
    days = (local.date() - now.date()).days
    if days == 1:
        text += " tomorrow"
    elif days != 0:
        text += local.strftime(" on %a %d %b")
    if local.utcoffset() != timedelta(0):
        text += f" ({when.astimezone(UTC).strftime(fmt)} UTC)"
    return text


def _without_reset(message: str) -> str:
    """The gateway's own "; it resets at ..., in N s" left out: the reset is said once,
    as a time of day."""
    head, sep, tail = message.partition("; it resets")
    if not sep:
        return message
    status = tail.find(" (HTTP")
    return head + (tail[status:] if status >= 0 else "")


class Halt:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.reason: SlideFailed | None = None  # what slides not sent fail with
        self.cause: Stop | None = None  # the batch-wide refusal, when that stopped it

    def after(self, error: str | None, code: str | None, retry_after_s: float | None = None):
        """Called with each slide's outcome; halts the batch on a batch-wide refusal."""
        if code not in BATCH_CODES or error is None:
            return
        resets_at = None
        if retry_after_s is not None:
            resets_at = datetime.now(UTC) + timedelta(seconds=retry_after_s)
        with self._lock:
            if self.reason is None:
                self.cause = Stop(error, code, resets_at)
                self._stop(f"{NOT_SENT}: {error}", code)

    def stop(self, message: str, code: str) -> None:
        """Send nothing more; the first reason given is the one slides fail with."""
        with self._lock:
            if self.reason is None:
                self._stop(message, code)

    def _stop(self, message: str, code: str) -> None:
        self.reason = SlideFailed(message, code)
        self._event.set()

    def stopped(self, code: str | None) -> bool:
        """Whether a slide that failed with ``code`` failed for the batch's reason."""
        return self.cause is not None and code == self.cause.code

    def check(self) -> None:
        """Raise the batch's reason if it was halted."""
        if self._event.is_set() and self.reason is not None:
            raise SlideFailed(str(self.reason), self.reason.code)

    def sleep(self, seconds: float) -> None:
        """Wait, but wake as soon as the batch is halted (and raise its reason)."""
        self._event.wait(seconds)
        self.check()
