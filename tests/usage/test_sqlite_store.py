"""The embedded SQLite default: exact counters with many threads and many processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, in_threads, today
from usage_helpers import make_recorder, serve

from gateway.context import RequestContext
from gateway.usage.records import record_from_context
from gateway.usage.sqlite_store import SQLiteStore


def _config(path: Path, **extra) -> dict:
    return {"usage": {"sqlite": {"path": str(path)}}, **extra}


def test_records_and_counters(tmp_path, monkeypatch):
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    db = tmp_path / "usage.sqlite3"
    recorder = make_recorder(_config(db))
    ok = serve(recorder, principal="key:lab", images=2)
    bad = serve(recorder, principal="key:lab", status=503, error_code="backend_unavailable")
    store = SQLiteStore(db)
    records = {r["request_id"]: r for r in store.records()}
    assert set(records) == {ok.request_id, bad.request_id}
    good = records[ok.request_id]
    assert good["image"] == {"bytes": 1234, "width": 64, "height": 48, "format": "jpeg"}
    assert good["backend"] == {"model": "eos", "version": "1"}
    assert good["latency_ms"]["backend"] == 5.0 and good["day"] == today()
    assert records[bad.request_id]["error_code"] == "backend_unavailable"
    daily = store.daily("key:lab", "eos", today())
    assert (daily["requests"], daily["errors"], daily["images"], daily["detections"]) == (
        2,
        1,
        2,
        6,
    )


def test_same_record_twice_counts_once(tmp_path):
    store = SQLiteStore(tmp_path / "u.sqlite3")
    ctx = RequestContext(method="POST", path="/")
    ctx.principal, ctx.service, ctx.instances = "key:x", "eos", 3
    rec = record_from_context(ctx)
    assert store.commit(rec) is True
    assert store.commit(rec) is False
    assert store.daily("key:x", "eos", rec.day)["images"] == 3


def test_quota_with_config_and_override_table(tmp_path, monkeypatch):
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    db = tmp_path / "usage.sqlite3"
    raw = _config(db, quotas={"default": {"daily_images": 2}})
    recorder = make_recorder(raw)
    assert [serve(recorder, principal="key:a").status for _ in range(3)] == [200, 200, 429]
    SQLiteStore(db).set_quota("key:b", 1)
    fresh = make_recorder(raw)
    assert [serve(fresh, principal="key:b").status for _ in range(2)] == [200, 429]
    assert serve(fresh, principal="key:a").status == 429  # counted by the first recorder


def test_many_threads(tmp_path, monkeypatch):
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    db = tmp_path / "usage.sqlite3"
    recorder = make_recorder(_config(db))

    def work(_thread: int) -> None:
        for _ in range(25):
            serve(recorder, principal="key:t")

    errors = in_threads(work, 8)
    assert not errors
    store = SQLiteStore(db)
    assert len(list(store.records())) == 200
    assert store.daily("key:t", "eos", today())["requests"] == 200


_WORKER = """
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
from usage_helpers import make_recorder, serve
recorder = make_recorder({{"usage": {{"sqlite": {{"path": {db!r}}}}}}})
for _ in range(40):
    serve(recorder, principal="key:p")
"""


@pytest.mark.process
def test_many_processes(tmp_path):
    db = tmp_path / "usage.sqlite3"
    code = _WORKER.format(repo=str(REPO), tests=str(REPO / "tests"), db=str(db))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env) for _ in range(4)
    ]
    assert [p.wait(timeout=180) for p in procs] == [0, 0, 0, 0]
    store = SQLiteStore(db)
    assert len(list(store.records())) == 160
    assert store.daily("key:p", "eos", today())["requests"] == 160


def test_request_rate_counts_failed_requests_and_answers_429(tmp_path, monkeypatch):
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    db = tmp_path / "usage.sqlite3"
    quotas = {"default": {"requests_per_minute": 3}, "principals": {"key:big": {}}}
    recorder = make_recorder(_config(db, quotas=quotas))
    statuses = [
        serve(recorder, principal="key:a", status=422, error_code="undecodable_image").status,
        serve(recorder, principal="key:a", status=422, error_code="undecodable_image").status,
        serve(recorder, principal="key:a").status,
    ]
    refused = serve(recorder, principal="key:a")
    assert statuses == [422, 422, 200] and refused.status == 429
    assert refused.error_code == "quota_exceeded" and "per minute" in refused.error_message
    assert 1 <= int(refused.retry_after) <= 60
    assert all(serve(recorder, principal="key:big").status == 200 for _ in range(5))
    daily = SQLiteStore(db).daily("key:a", "eos", today())
    assert (daily["requests"], daily["errors"], daily["images"]) == (4, 3, 1)


def test_only_admitted_requests_of_configured_services_are_stored(tmp_path, monkeypatch):
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    db = tmp_path / "usage.sqlite3"
    recorder = make_recorder(_config(db))
    refused = RequestContext(method="POST", path="/v1/services/eos:detect")
    refused.service, refused.status, refused.error_code = "eos", 401, "unauthenticated"
    recorder.finish(refused)  # begin was never called: the caller was not admitted
    made_up = serve(recorder, principal="key:a", service="no-such-service")
    store = SQLiteStore(db)
    records = {r["request_id"]: r for r in store.records()}
    assert list(records) == [made_up.request_id]
    assert records[made_up.request_id]["service"] == "-"
    assert store.daily("key:a", "no-such-service", today()) is None


def test_a_file_of_an_older_version_gets_the_new_columns_and_keeps_its_records(tmp_path):
    """Written before counts at a threshold and raw detections were kept apart: its old
    records are read by their route, new ones add to the new counters."""
    import sqlite3

    db = tmp_path / "usage.sqlite3"
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        CREATE TABLE "usage" (ts TEXT NOT NULL, request_id TEXT PRIMARY KEY, day TEXT,
            principal TEXT, service TEXT, route TEXT, status INTEGER, images INTEGER,
            detections INTEGER, threshold REAL);
        CREATE TABLE "usage_daily" (id TEXT PRIMARY KEY, principal TEXT NOT NULL,
            service TEXT NOT NULL, day TEXT NOT NULL, requests INTEGER NOT NULL DEFAULT 0,
            errors INTEGER NOT NULL DEFAULT 0, images INTEGER NOT NULL DEFAULT 0,
            tiles INTEGER NOT NULL DEFAULT 0, detections INTEGER NOT NULL DEFAULT 0);
        """
    )
    day = today()
    conn.executemany(
        'INSERT INTO "usage" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
        [
            ("t", "old-predict", day, "key:lab", "eos", "predict", 200, 1, 40, 0.0),
            ("t", "old-detect", day, "key:lab", "eos", "detect", 200, 1, 3, 0.3),
        ],
    )
    conn.execute(
        'INSERT INTO "usage_daily" (id, principal, service, day, requests, images, detections) '
        "VALUES (?, ?, ?, ?, 2, 2, 43)",
        (f"key:lab__eos__{day}", "key:lab", "eos", day),
    )
    conn.commit()
    conn.close()

    store = SQLiteStore(db)
    ctx = RequestContext(method="POST", path="/")
    ctx.route, ctx.service, ctx.principal, ctx.instances = "predict", "eos", "key:lab", 1
    ctx.detections, ctx.uncut = 7, True
    assert store.commit(record_from_context(ctx, service="eos"))

    from gateway.usage.records import detection_counts

    counts = {r["request_id"]: detection_counts(r) for r in store.records()}
    assert counts["old-predict"] == (0, 40) and counts["old-detect"] == (3, 0)
    assert counts[ctx.request_id] == (0, 7)
    daily = store.daily("key:lab", "eos", day)
    assert (daily["requests"], daily["detections"], daily["raw_detections"]) == (3, 50, 7)
    assert [r["service"] for r in store.day_totals("key:lab", day)] == ["eos"]
