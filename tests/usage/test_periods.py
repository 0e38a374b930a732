"""Periods of UTC days named relative to today."""

from __future__ import annotations

from datetime import date

import pytest

from gateway.usage.periods import PeriodError, first_day, iso_week, last_day, period

TODAY = date(2026, 12, 8)  # a Tuesday


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [
        ("today", "2026-12-08", "2026-12-08"),
        ("yesterday", "2026-12-07", "2026-12-07"),
        ("7d", "2026-12-02", "2026-12-08"),
        ("1d", "2026-12-08", "2026-12-08"),
        ("2w", "2026-11-25", "2026-12-08"),
        ("this-week", "2026-12-07", "2026-12-13"),
        ("last-week", "2026-11-30", "2026-12-06"),
        ("this-month", "2026-12-01", "2026-12-31"),
        ("last-month", "2026-11-01", "2026-11-30"),
        ("this-year", "2026-01-01", "2026-12-31"),
        ("2026-02-03", "2026-02-03", "2026-02-03"),
        (" Last-Month ", "2026-11-01", "2026-11-30"),
    ],
)
def test_each_word_names_a_period(text, first, last):
    assert first_day(text, TODAY) == first and last_day(text, TODAY) == last


def test_last_month_in_january_is_december():
    assert period("last-month", date(2027, 1, 15)) == (date(2026, 12, 1), date(2026, 12, 31))


@pytest.mark.parametrize("text", ["0d", "lastweek", "2026-13-01", "", "7x"])
def test_nonsense_is_refused_with_the_forms(text):
    with pytest.raises(PeriodError, match="this-week"):
        period(text, TODAY)


def test_iso_weeks():
    assert iso_week("2026-12-08") == "2026-W50"
    assert iso_week("2027-01-01") == "2026-W53"
