"""The days a usage question covers: dates, or periods named relative to today (UTC).

Records are filed under their UTC day, so every period here is a run of UTC days.  A
relative word names a period; ``--since`` takes its first day and ``--until`` its last,
so ``--since last-month --until last-month`` is last month and ``--since 7d`` the last seven
days, today included.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

WORDS = ("today", "yesterday", "this-week", "last-week", "this-month", "last-month", "this-year")
_SPAN = re.compile(r"^(\d{1,4})([dw])$")
HELP = (
    "a date (YYYY-MM-DD) or a period: today, yesterday, Nd (the last N days, today "
    "included), Nw, this-week, last-week (Monday to Sunday), this-month, last-month, this-year"
)


class PeriodError(ValueError):
    """Text that names no day."""


def utc_today() -> date:
    return datetime.now(UTC).date()


def period(text: str, today: date | None = None) -> tuple[date, date]:
    """(first day, last day) that ``text`` names, both included."""
    today = today or utc_today()
    word = text.strip().lower()
    span = _SPAN.match(word)
    if span:
        n = int(span.group(1)) * (7 if span.group(2) == "w" else 1)
        if n < 1:
            raise PeriodError(f"{text!r} is a period of no day; use {HELP}")
        return today - timedelta(days=n - 1), today
    if word == "today":
        return today, today
    if word == "yesterday":
        day = today - timedelta(days=1)
        return day, day
    if word in ("this-week", "last-week"):
        monday = today - timedelta(days=today.weekday())
        if word == "last-week":
            monday -= timedelta(days=7)
        return monday, monday + timedelta(days=6)
    if word in ("this-month", "last-month"):
        first = today.replace(day=1)
        if word == "last-month":
            first = (first - timedelta(days=1)).replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        return first, following - timedelta(days=1)
    if word == "this-year":
        return today.replace(month=1, day=1), today.replace(month=12, day=31)
    try:
        day = date.fromisoformat(word)
    except ValueError:
        raise PeriodError(f"{text!r} is not {HELP}") from None
    return day, day


def first_day(text: str, today: date | None = None) -> str:
    """``--since``: the first day of the period ``text`` names, ``YYYY-MM-DD``."""
    return period(text, today)[0].isoformat()


def last_day(text: str, today: date | None = None) -> str:
    """``--until``: the last day of the period ``text`` names, ``YYYY-MM-DD``."""
    return period(text, today)[1].isoformat()


def iso_week(day: str) -> str:
    """``2026-W49``: the ISO week (Monday to Sunday) a ``YYYY-MM-DD`` day is in."""
    try:
        year, week, _ = date.fromisoformat(day).isocalendar()
    except ValueError:
        return day
    return f"{year}-W{week:02d}"
