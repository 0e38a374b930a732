"""The usage report: percentiles, groups and totals, principals by any name, the periods
asked for, CSV and JSON, and what it says when there is nothing to read."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from gateway.context import RequestContext
from gateway.usage.records import record_from_context
from gateway.usage.report import main, percentile, principal_matcher, summarize
from gateway.usage.sqlite_store import SQLiteStore


def test_percentile_and_summary():
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    rows, total = summarize(
        [
            {"day": "d", "principal": "p", "service": "s", "status": 200, "images": 2,
             "route": "detect", "threshold": 0.3, "detections": 7, "latency_ms": {"total": 10.0}},
            {"day": "d", "principal": "p", "service": "s", "status": 503, "images": 0,
             "detections": 0, "latency_ms": {"total": 30.0}},
        ]
    )  # fmt: skip
    assert rows == [
        {"day": "d", "principal": "p", "service": "s", "requests": 2, "images": 2,
         "counted": 7, "raw_detections": 0, "errors": 1, "p50_ms": 10.0, "p95_ms": 30.0}
    ]  # fmt: skip
    assert total == {"requests": 2, "images": 2, "counted": 7, "raw_detections": 0,
                     "errors": 1, "p50_ms": 10.0, "p95_ms": 30.0}  # fmt: skip


@pytest.mark.parametrize(
    ("asked", "yes", "no"),
    [
        ("alice-notebook", ["key:alice-notebook"], ["key:alice-notebook2", "key:bob"]),
        ("key:alice-notebook", ["key:alice-notebook"], ["firebase:alice-notebook"]),
        ("Ann@Lab.org", ["google:ann@lab.org", "firebase:ann@lab.org"], ["google:ann@lab.com"]),
        ("google:ann@lab.org", ["google:ANN@lab.org"], ["firebase:ann@lab.org"]),
        ("Xy12uid", ["firebase:Xy12uid"], ["firebase:xy12uid"]),
        ("anonymous", ["anonymous"], ["key:anonymous"]),
    ],
)
def test_a_principal_is_found_with_or_without_its_prefix(asked, yes, no):
    match = principal_matcher(asked)
    assert all(match(p) for p in yes)
    assert not any(match(p) for p in no)


def _record(store, principal, day, *, route="detect", images=1, detections=0, uncut=False,
            status=200, service="eos", latency=None):  # fmt: skip
    ctx = RequestContext(method="POST", path="/")
    ctx.route, ctx.service, ctx.principal, ctx.instances = route, service, principal, images
    ctx.detections, ctx.uncut, ctx.status = detections, uncut, status
    ctx.threshold = None if uncut else 0.3
    when = datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC)
    store.commit(record_from_context(ctx, now=when, service=service))


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A SQLite store in the working folder, as the gateway leaves it, with records of
    three callers over the last few weeks."""
    for name in ("GATEWAY_CONFIG", "FIRESTORE_EMULATOR_HOST", "K_SERVICE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore(tmp_path / ".gateway" / "usage.sqlite3")
    today = datetime.now(UTC).date()
    day = [(today - timedelta(days=n)).isoformat() for n in range(40)]
    _record(store, "key:alice-notebook", day[0], images=2, detections=24)
    _record(store, "key:alice-notebook", day[0], route="predict", detections=300, uncut=True)
    _record(store, "key:alice-notebook", day[1], detections=10)
    _record(store, "key:alice-notebook", day[1], status=422, images=1)
    _record(store, "google:ann@lab.org", day[0], detections=5, service="tissue")
    _record(store, "firebase:u1", day[20], images=3, detections=9)
    _record(store, "firebase:u1", day[39], images=4, detections=1)
    store.close()
    return day


def _json(capsys, *args):
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_totals_per_principal_with_a_total_line(lab, capsys):
    doc = _json(capsys, "--by", "principal")
    rows = {r["principal"]: r for r in doc["rows"]}
    alice = rows["key:alice-notebook"]
    assert (alice["requests"], alice["images"], alice["errors"]) == (4, 4, 1)
    assert (alice["counted"], alice["raw_detections"]) == (34, 300)
    assert set(rows["key:alice-notebook"]) == {
        "principal",
        "requests",
        "images",
        "counted",
        "raw_detections",
        "errors",
        "p50_ms",
        "p95_ms",
    }
    assert doc["total"]["requests"] == 7 and doc["total"]["images"] == 4 + 1 + 3 + 4
    assert doc["total"]["counted"] == 34 + 5 + 9 + 1

    assert main(["--by", "principal"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:6] == ["principal", "requests", "images", "counted",
                                    "raw_detections", "errors"]  # fmt: skip
    assert lines[-1].split()[:6] == ["TOTAL", "7", "12", "49", "300", "1"]


def test_periods_relative_and_absolute(lab, capsys):
    day = lab
    assert _json(capsys, "--since", "today")["total"]["requests"] == 3
    assert _json(capsys, "--since", "2d")["total"]["requests"] == 5
    assert _json(capsys, "--since", "yesterday", "--until", "yesterday")["total"]["requests"] == 2
    assert _json(capsys, "--until", day[21])["total"]["requests"] == 1
    assert _json(capsys, "--since", day[39], "--until", day[20])["total"]["requests"] == 2
    assert _json(capsys, "--since", "2999-01-01")["rows"] == []
    assert main(["--since", "today", "--until", "yesterday"]) == 2
    with pytest.raises(SystemExit):
        main(["--since", "last-fortnight"])
    assert "last-month" in capsys.readouterr().err


def test_by_service_week_and_day(lab, capsys):
    rows = _json(capsys, "--by", "service")["rows"]
    assert [(r["service"], r["requests"]) for r in rows] == [("eos", 6), ("tissue", 1)]
    weeks = _json(capsys, "--by", "week")["rows"]
    assert sum(r["requests"] for r in weeks) == 7
    assert all("-W" in r["week"] for r in weeks)
    days = _json(capsys, "--by", "day,principal", "--since", "today")["rows"]
    assert [(r["day"], r["principal"]) for r in days] == [
        (lab[0], "google:ann@lab.org"), (lab[0], "key:alice-notebook")]  # fmt: skip


def test_a_principal_without_its_prefix_and_csv(lab, capsys):
    assert main(["--principal", "alice-notebook", "--by", "principal", "--csv"]) == 0
    lines = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert lines[0][:3] == ["principal", "requests", "images"]
    assert lines[1][:3] == ["key:alice-notebook", "4", "4"]
    assert lines[-1][:3] == ["TOTAL", "4", "4"] and len(lines) == 3
    email = _json(capsys, "--principal", "ANN@lab.org", "--by", "principal")["rows"]
    assert [r["principal"] for r in email] == ["google:ann@lab.org"]


def test_a_missing_database_is_named(tmp_path, monkeypatch, capsys):
    for name in ("GATEWAY_CONFIG", "FIRESTORE_EMULATOR_HOST", "K_SERVICE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main([]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / ".gateway" / "usage.sqlite3") in err
    assert "GATEWAY_CONFIG" in err and "no usage records" not in err
