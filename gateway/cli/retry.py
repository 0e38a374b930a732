"""When to send a slide again: which answers are worth a retry, and how long to wait.

A busy deployment answers 429 (a rate limit, or the caller's daily quota), 503 (no
instance or model server free) or 504 (the model took too long); the same request a
little later usually succeeds.  Waits grow exponentially with jitter, so many clients
that failed together do not come back together, and a ``Retry-After`` from the server is
honoured: never sooner.  Both the number of retries and the total wait per slide are
bounded; a ``Retry-After`` beyond what is left of that wait (a quota that resets at
midnight) is a failure now, not hours of sleep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_STATUSES = frozenset({429, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 8  # with the backoff below: about two minutes of waiting in all
    max_wait_s: float = 300.0  # long enough to ride out a model server's restart
    first_backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """The wait before retry number ``retry`` (0-based) when the server named none."""
        ceiling = min(self.max_backoff_s, self.first_backoff_s * 2**retry)
        return ceiling * (0.5 + 0.5 * (rng or random).random())

    def wait(
        self,
        retry: int,
        waited_s: float,
        retry_after_s: float | None,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before retry number ``retry``, or None: give up now."""
        if retry >= self.retries:
            return None
        if retry_after_s is not None:
            delay = retry_after_s + 0.25 * (rng or random).random()
        else:
            delay = self.backoff(retry, rng)
        if waited_s + delay > self.max_wait_s:
            return None
        return delay


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
