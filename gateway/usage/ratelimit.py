"""A caller's quotas as the IETF ``RateLimit-Policy`` and ``RateLimit`` header fields.

The form is that of draft-ietf-httpapi-ratelimit-headers-10 (September 2025): each field
is a Structured Fields List (RFC 9651) of items, each a String naming the policy with its
parameters.  ``RateLimit-Policy`` holds each policy's quota ``q`` and window ``w`` in
seconds; ``RateLimit`` the quota units remaining ``r`` and the seconds ``t`` until the
window resets.  The gateway has two policies: ``"daily"``, images per UTC day, and
``"minute"``, requests per UTC minute (failed ones included).  The draft's quota unit
parameter ``qu`` registers only requests, content bytes and concurrent requests, so the
daily policy's unit (images) is documented (docs/usage.md) rather than sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DAILY, MINUTE = "daily", "minute"


@dataclass(frozen=True)
class LimitState:
    """One policy of one caller, now."""

    name: str  # DAILY or MINUTE
    quota: int  # images a day, or requests a minute
    window_s: int  # 86400 or 60
    remaining: int | None  # None: not known here without a store read
    reset_s: int  # seconds until the window ends

    def to_json(self) -> dict[str, int | None]:
        return {"limit": self.quota, "remaining": self.remaining, "reset_s": self.reset_s}


def policy_field(states: Sequence[LimitState]) -> str:
    """``"daily";q=500;w=86400, "minute";q=60;w=60``"""
    return ", ".join(f'"{s.name}";q={s.quota};w={s.window_s}' for s in states)


def limit_field(states: Sequence[LimitState]) -> str:
    """``"daily";r=123;t=3600, "minute";r=59;t=12``: the policies whose remaining is known."""
    return ", ".join(
        f'"{s.name}";r={max(0, s.remaining)};t={max(0, s.reset_s)}'
        for s in states
        if s.remaining is not None
    )


def headers(states: Sequence[LimitState]) -> dict[str, str]:
    """Both fields, or none when no policy limits the caller (no ``quotas``, or unlimited)."""
    out: dict[str, str] = {}
    if states:
        out["RateLimit-Policy"] = policy_field(states)
        value = limit_field(states)
        if value:
            out["RateLimit"] = value
    return out
