"""The usage recorder in this process against the real Firestore emulator."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pytest
from helpers import in_threads, today
from usage_helpers import daily_counters, make_recorder, serve

from gateway.context import RequestContext
from gateway.errors import QuotaExceeded
from gateway.usage.records import daily_doc_id, quota_doc_id


@pytest.fixture
def spool_path(tmp_path):
    return str(tmp_path / "spool.sqlite3")


def _config(spool_path: str, quotas=None, **firestore) -> dict:
    raw = {
        "usage": {
            "spool_path": spool_path,
            "firestore": {"write_timeout_s": 2, "read_timeout_s": 2, "retry_after_s": 0.2}
            | firestore,
        }
    }
    if quotas is not None:
        raw["quotas"] = quotas
    return raw


def _records(client, prefix: str = "") -> dict[str, dict]:
    return {s.id: s.to_dict() for s in client.collection(f"{prefix}usage").stream()}


def _daily(client, principal: str, service: str = "eos", prefix: str = "") -> dict:
    return daily_counters(client, principal, service, today(), prefix)


def test_good_and_failed_requests_are_recorded_with_counters(
    firestore_emulator, firestore_project, spool_path
):
    recorder = make_recorder(_config(spool_path))
    ok = serve(recorder, principal="key:lab", auth_method="api_key", images=2)
    bad = serve(recorder, principal="key:lab", auth_method="api_key", status=504,
                error_code="backend_timeout")  # fmt: skip
    client = firestore_emulator.client(firestore_project)

    records = _records(client)
    assert set(records) == {ok.request_id, bad.request_id}
    good = records[ok.request_id]
    assert good["principal"] == "key:lab"
    assert good["auth_method"] == "api_key"
    assert good["service"] == "eos"
    assert good["route"] == "detect"
    assert good["status"] == 200
    assert good["error_code"] is None
    assert good["image"] == {"bytes": 1234, "width": 64, "height": 48, "format": "jpeg"}
    assert good["instances"] == 2
    assert good["tiles"] == 2
    assert good["detections"] == 6
    assert good["threshold"] == 0.3
    assert good["latency_ms"]["backend"] == 5.0
    assert isinstance(good["latency_ms"]["total"], float)
    assert good["backend"] == {"model": "eos", "version": "1"}
    assert isinstance(good["ts"], datetime)
    assert good["day"] == today()
    failed = records[bad.request_id]
    assert failed["status"] == 504
    assert failed["error_code"] == "backend_timeout"
    assert failed["images"] == 0

    daily = _daily(client, "key:lab")
    assert daily["principal"] == "key:lab"
    assert daily["service"] == "eos"
    assert daily["day"] == today()
    assert (daily["requests"], daily["errors"], daily["images"]) == (2, 1, 2)
    assert (daily["tiles"], daily["detections"]) == (2, 6)
    # nothing secret or heavy in a record
    text = json.dumps(records, default=str)
    assert "Authorization" not in text and "remote_addr" not in text


def test_prefix_and_principals_with_slashes(firestore_emulator, firestore_project, spool_path):
    raw = _config(spool_path)
    raw["usage"]["collection_prefix"] = "staging_"
    recorder = make_recorder(raw)
    principal = "google:a/b__c@example.com"
    ctx = serve(recorder, principal=principal, auth_method="google")
    client = firestore_emulator.client(firestore_project)
    assert list(_records(client)) == []
    assert list(_records(client, "staging_")) == [ctx.request_id]
    daily = _daily(client, principal, prefix="staging_")
    assert daily["principal"] == principal and daily["requests"] == 1
    doc_id = daily_doc_id(principal, "eos", today())
    assert "/" not in doc_id and doc_id.count("__") == 2


def test_concurrent_requests_keep_exact_counters(firestore_emulator, firestore_project, spool_path):
    recorder = make_recorder(_config(spool_path))
    per_thread, threads = 6, 6

    def work(n: int) -> None:
        for i in range(per_thread):
            status = 422 if (n + i) % 3 == 0 else 200
            serve(recorder, principal="firebase:u1", images=1, status=status)

    errors = in_threads(work, threads)
    assert not errors
    total = per_thread * threads
    bad = sum(1 for n in range(threads) for i in range(per_thread) if (n + i) % 3 == 0)
    client = firestore_emulator.client(firestore_project)
    assert len(_records(client)) == total
    daily = _daily(client, "firebase:u1")
    assert daily["requests"] == total
    assert daily["errors"] == bad
    assert daily["images"] == total - bad


def test_quota_refuses_with_retry_after_and_records_refusals(
    firestore_emulator, firestore_project, spool_path
):
    quotas = {"default": {"daily_images": 5}, "principals": {"key:big": {"daily_images": 100}}}
    recorder = make_recorder(_config(spool_path, quotas=quotas))
    served = [serve(recorder, principal="key:small", images=2) for _ in range(3)]
    assert [c.status for c in served] == [200, 200, 429]
    refused = served[2]
    assert refused.error_code == "quota_exceeded"
    retry_after = int(refused.retry_after)
    assert 1 <= retry_after <= 86400
    # one more image still fits (4 + 1 <= 5); after that nothing does
    assert serve(recorder, principal="key:small", images=1).status == 200
    assert serve(recorder, principal="key:small", images=1).status == 429
    assert serve(recorder, principal="key:big", images=10).status == 200

    client = firestore_emulator.client(firestore_project)
    daily = _daily(client, "key:small")
    assert (daily["requests"], daily["errors"], daily["images"]) == (5, 2, 5)
    record = _records(client)[refused.request_id]
    assert record["status"] == 429 and record["error_code"] == "quota_exceeded"
    assert record["images"] == 0


def test_quota_override_document_and_other_processes_usage(
    firestore_emulator, firestore_project, spool_path
):
    quotas = {"default": {"daily_images": 2}}
    client = firestore_emulator.client(firestore_project)
    client.collection("quotas").document(quota_doc_id("key:vip")).set({"daily_images": 3})
    first = make_recorder(_config(spool_path, quotas=quotas))
    assert [serve(first, principal="key:vip").status for _ in range(4)] == [200, 200, 200, 429]
    # a second process (another recorder) sees the images counted by the first in Firestore
    second = make_recorder(_config(spool_path + "-2", quotas=quotas))
    assert serve(second, principal="key:vip").status == 429
    assert serve(second, principal="key:other").status == 200


def test_no_quotas_section_means_unlimited(firestore_emulator, firestore_project, spool_path):
    recorder = make_recorder(_config(spool_path))
    assert all(serve(recorder, images=16).status == 200 for _ in range(5))


def test_outage_spools_logs_and_flushes_exactly_once(
    firestore_emulator, firestore_project, spool_path, capsys
):
    recorder = make_recorder(_config(spool_path, quotas={"default": {"daily_images": 1000}}))
    before = [serve(recorder, principal="key:lab").request_id for _ in range(3)]
    firestore_emulator.stop()
    during = [serve(recorder, principal="key:lab").request_id for _ in range(5)]
    assert recorder.spool.pending() == 5
    warnings = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and '"usage_record"' in line
    ]
    assert {w["usage_record"]["request_id"] for w in warnings} == set(during)
    assert all(w["severity"] == "WARNING" for w in warnings)

    firestore_emulator.start()
    after: list[str] = []
    for _ in range(40):  # bounded: each request flushes up to flush_batch spooled records
        after.append(serve(recorder, principal="key:lab").request_id)
        if recorder.spool.pending() == 0:
            break
        threading.Event().wait(0.25)
    assert recorder.spool.pending() == 0

    client = firestore_emulator.client(firestore_project)
    records = _records(client)
    assert set(records) == set(before + during + after)
    for rid in during:
        assert records[rid]["spooled"] is True
        assert records[rid]["day"] == today()
    daily = _daily(client, "key:lab")
    assert daily["requests"] == len(before + during + after)
    assert daily["images"] == len(before + during + after)


def test_replayed_spool_record_is_not_counted_twice(
    firestore_emulator, firestore_project, spool_path
):
    """A commit that reached Firestore but timed out on the way back is spooled anyway."""
    recorder = make_recorder(_config(spool_path))
    ctx = serve(recorder, principal="key:lab", images=2)
    from gateway.context import RequestContext
    from gateway.usage.records import record_from_context

    again = RequestContext(method="POST", path="/", request_id=ctx.request_id)
    again.principal, again.service, again.instances = "key:lab", "eos", 2
    recorder.spool.add(record_from_context(again))
    assert recorder.flush_spool() == 1
    assert recorder.spool.pending() == 0
    daily = _daily(firestore_emulator.client(firestore_project), "key:lab")
    assert (daily["requests"], daily["images"]) == (1, 2)


def test_two_workers_share_one_spool(firestore_emulator, firestore_project, spool_path):
    a = make_recorder(_config(spool_path))
    b = make_recorder(_config(spool_path))
    firestore_emulator.stop()
    ids = [serve(w, principal="key:w").request_id for w in (a, b, a, b, a, b)]
    firestore_emulator.start()
    threading.Event().wait(0.3)  # let the retry_after_s pause after the failure pass
    results: list[int] = []
    flushers = [
        threading.Thread(target=lambda w=w: results.append(w.flush_spool())) for w in (a, b)
    ]
    for t in flushers:
        t.start()
    for t in flushers:
        t.join(timeout=60)
    assert sum(results) == 6
    assert a.spool.pending() == 0
    client = firestore_emulator.client(firestore_project)
    assert set(_records(client)) == set(ids)
    assert _daily(client, "key:w")["requests"] == 6


def test_hung_firestore_does_not_hold_the_request(
    firestore_emulator, firestore_project, spool_path
):
    recorder = make_recorder(_config(spool_path, write_timeout_s=0.5, read_timeout_s=0.5))
    serve(recorder, principal="key:lab")  # connects
    firestore_emulator.pause()
    done: list[str] = []
    worker = threading.Thread(target=lambda: done.append(serve(recorder).request_id))
    worker.start()
    # the client's default retry would wait about a minute; the deadline must hold instead
    worker.join(timeout=20)
    firestore_emulator.resume()
    assert done, "finish() did not return while Firestore hung"
    assert recorder.spool.pending() == 1


def test_a_request_admitted_earlier_is_checked_against_what_was_served_since(
    firestore_emulator, firestore_project, spool_path
):
    """A is admitted, then B is served and recorded, then A is checked: A sees B."""
    from gateway.context import RequestContext

    recorder = make_recorder(_config(spool_path, quotas={"default": {"daily_images": 1}}))
    a = RequestContext(method="POST", path="/v1/services/eos:detect")
    a.route, a.service, a.principal = "detect", "eos", "key:race"
    recorder.begin(a)
    assert serve(recorder, principal="key:race").status == 200
    with pytest.raises(QuotaExceeded):
        recorder.check_quota(a, images=1)
    a.status, a.error_code = 429, "quota_exceeded"
    recorder.finish(a)
    daily = _daily(firestore_emulator.client(firestore_project), "key:race")
    assert (daily["requests"], daily["images"], daily["errors"]) == (2, 1, 1)


def test_full_spool_still_logs_the_record(
    firestore_emulator, firestore_project, spool_path, capsys
):
    raw = _config(spool_path)
    raw["usage"]["spool_max_records"] = 2
    recorder = make_recorder(raw)
    firestore_emulator.stop()
    ids = [serve(recorder, principal="key:lab").request_id for _ in range(3)]
    firestore_emulator.start()
    assert recorder.spool.pending() == 2
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if '"usage_record"' in x]
    assert [x["usage_record"]["request_id"] for x in lines] == ids
    assert [x["spooled"] for x in lines] == [True, True, False]
    assert "spool full" in lines[2]["error"]


def test_counters_are_sharded_and_days_written_before_still_count(
    firestore_emulator, firestore_project, spool_path
):
    """Counters go to ``usage_daily/<id>/shards/<n>``; a day document that holds counters
    itself (written before sharding) is added by readers, the quota's base included."""
    raw = _config(spool_path, quotas={"default": {"daily_images": 10}})
    raw["usage"]["counter_shards"] = 4
    client = firestore_emulator.client(firestore_project)
    old = client.collection("usage_daily").document(daily_doc_id("key:old", "eos", today()))
    old.set({"principal": "key:old", "service": "eos", "day": today(), "requests": 7,
             "errors": 0, "images": 7, "tiles": 7, "detections": 21})  # fmt: skip
    recorder = make_recorder(raw)
    statuses = [serve(recorder, principal="key:old").status for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]  # 7 before + 3 = 10
    for _ in range(20):
        serve(recorder, principal="key:new")
    new = _daily(client, "key:new")
    assert new["requests"] == 20 and 1 < new["shards"] <= 4
    parent = client.collection("usage_daily").document(daily_doc_id("key:new", "eos", today()))
    assert set(parent.get().to_dict()) == {"principal", "service", "day"}  # names only
    assert recorder.store.daily_images("key:old", today()) == 10
    assert recorder.store.daily("key:old", "eos", today())["requests"] == 12


def test_request_rate_holds_across_processes(firestore_emulator, firestore_project, spool_path):
    quotas = {"default": {"requests_per_minute": 6}}
    a = make_recorder(_config(spool_path, quotas=quotas))
    b = make_recorder(_config(spool_path + "-2", quotas=quotas))
    for _ in range(2):  # each UTC minute has its own ledger: measure within one
        minute = datetime.now(UTC).strftime("%H:%M")
        statuses = [serve(w, principal="key:fast").status for w in (a, b) * 6]
        if datetime.now(UTC).strftime("%H:%M") == minute:
            break
    assert statuses.count(200) == 6 and statuses.count(429) == 6


def test_a_long_principal_has_its_quota(firestore_emulator, firestore_project, spool_path):
    principal = "google:" + "p" * 3000 + "@example.com"
    recorder = make_recorder(_config(spool_path, quotas={"default": {"daily_images": 2}}))
    assert [serve(recorder, principal=principal).status for _ in range(3)] == [200, 200, 429]
    fresh = make_recorder(_config(spool_path + "-2", quotas={"default": {"daily_images": 2}}))
    assert serve(fresh, principal=principal).status == 429
    client = firestore_emulator.client(firestore_project)
    assert {r["principal"] for r in _records(client).values()} == {principal}
    assert _daily(client, principal)["images"] == 2


def test_queries_of_a_hung_firestore_end_as_store_unavailable(
    firestore_emulator, firestore_project, spool_path
):
    """A query that times out is the store being unavailable (the quota is then served
    unchecked, as in any outage), not a library error escaping the usage layer."""
    from gateway.usage.stores import StoreUnavailable

    recorder = make_recorder(_config(spool_path, read_timeout_s=0.5))
    store = recorder.store
    assert store.entries_after("some-ledger", -1) == []  # connects
    firestore_emulator.pause()
    try:
        for query in (lambda: store.entries_after("some-ledger", -1),
                      lambda: store.daily_images("key:lab", today())):  # fmt: skip
            with pytest.raises(StoreUnavailable):
                query()
    finally:
        firestore_emulator.resume()


def _shadowed(recorder, difference: int) -> str:
    """A shadowed request's record with its comparison, through begin and finish."""
    ctx = RequestContext(method="POST", path="/v1/services/eos:detect")
    ctx.route, ctx.service, ctx.principal, ctx.auth_method = "detect", "eos", "key:lab", "api_key"
    recorder.begin(ctx)
    ctx.variant = "current"
    ctx.shadow = {"variant": "candidate", "status": "ok", "tiles": 2, "backend_ms": 4.0}
    ctx.comparison = {
        "kind": "detection",
        "primary": {"variant": "current"},
        "shadow": dict(ctx.shadow),
        "slides": [{"primary_count": 10, "shadow_count": 10 + difference,
                    "difference": difference, "matched": 9, "only_primary": 1,
                    "only_shadow": 1 + difference}],  # fmt: skip
    }
    recorder.finish(ctx)
    return ctx.request_id


def test_comparisons_have_their_collection_and_survive_an_outage(
    firestore_emulator, firestore_project, spool_path
):
    recorder = make_recorder(_config(spool_path))
    first = _shadowed(recorder, 1)
    firestore_emulator.stop()
    during = _shadowed(recorder, 3)
    assert recorder.spool.pending() == 1
    firestore_emulator.start()
    for _ in range(40):
        recorder.flush_spool()
        if recorder.spool.pending() == 0:
            break
        threading.Event().wait(0.25)
    assert recorder.spool.pending() == 0
    client = firestore_emulator.client(firestore_project)
    docs = {s.id: s.to_dict() for s in client.collection("usage_comparisons").stream()}
    assert set(docs) == {first, during}
    assert docs[during]["slides"][0]["difference"] == 3
    assert docs[during]["day"] == today()
    found = {c["request_id"] for c in recorder.store.comparisons("eos", since=today())}
    assert found == {first, during}
    assert list(recorder.store.comparisons("other")) == []
    record = _records(client)[during]
    assert record["variant"] == "current"
    assert record["shadow"] == {"variant": "candidate", "status": "ok", "error_code": None,
                                "tiles": 2, "backend_ms": 4.0}  # fmt: skip
