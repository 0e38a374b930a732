"""Reading usage records back out of log lines (``python -m gateway replay-usage``)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

from gateway.context import RequestContext
from gateway.usage.records import UsageRecord, record_from_context
from gateway.usage.replay import records_in, replay
from gateway.usage.sqlite_store import SQLiteStore


def _record(rid: str, images: int = 1) -> UsageRecord:
    ctx = RequestContext(method="POST", path="/v1/services/eos:detect", request_id=rid)
    ctx.route, ctx.service, ctx.principal, ctx.status = "detect", "eos", "key:lab", 200
    ctx.instances, ctx.detections = images, 3
    return record_from_context(ctx, now=datetime(2026, 11, 26, 8, 30, tzinfo=UTC))


def _line(rec: UsageRecord, **extra) -> str:
    return json.dumps(
        {
            "severity": "WARNING",
            "message": "usage: record not written",
            "usage_record": rec.to_json(),
            **extra,
        }  # fmt: skip
    )


def test_log_lines_exports_and_bare_records_are_read():
    a, b, c = _record("a"), _record("b"), _record("c")
    text = "\n".join(
        [
            "plain text line from LOG_FORMAT=text",
            json.dumps({"severity": "INFO", "message": "POST /v1/... 200"}),
            _line(a),
            json.dumps(b.to_json()),
            "",
        ]
    )
    found = list(records_in(io.StringIO(text), "log"))
    assert [(w, r["request_id"]) for w, r in found] == [("log:3", "a"), ("log:4", "b")]
    export = json.dumps([{"jsonPayload": json.loads(_line(c))}, {"textPayload": "x"}])
    assert [r["request_id"] for _, r in records_in(io.StringIO(export), "x")] == ["c"]


def test_broken_lines_are_reported_not_skipped_silently():
    rec = _record("a")
    broken = _line(rec)[:-20]  # a truncated line that carried a record
    bad_time = _line(rec).replace("2026-11-26T08:30:00+00:00", "yesterday")
    found = list(records_in(io.StringIO(f"{broken}\n{bad_time}\n"), "log"))
    stored = []
    result = replay(found, lambda r: stored.append(r) or True)
    assert stored == [] and result.stored == 0
    assert len(result.unreadable) == 2
    assert result.unreadable[0].startswith("log:1")


def test_each_record_is_stored_once_into_sqlite(tmp_path):
    store = SQLiteStore(tmp_path / "usage.sqlite3")
    a, b = _record("a", images=2), _record("b")
    lines = "\n".join([_line(a), _line(b), _line(a)])
    first = replay(records_in(io.StringIO(lines), "log"), store.commit)
    assert (first.stored, first.already_stored) == (2, 1)
    second = replay(records_in(io.StringIO(lines), "log"), store.commit)
    assert (second.stored, second.already_stored) == (0, 3)
    daily = store.daily("key:lab", "eos", "2026-11-26")
    assert (daily["requests"], daily["images"]) == (2, 3)


def test_a_failing_store_is_reported_per_record_and_the_rest_go_on():
    def commit(rec: UsageRecord) -> bool:
        if rec.request_id == "b":
            raise RuntimeError("store down")
        return True

    lines = "\n".join(_line(_record(r)) for r in "abc")
    result = replay(records_in(io.StringIO(lines), "log"), commit)
    assert result.stored == 2
    assert result.failed == ["b: RuntimeError: store down"]
