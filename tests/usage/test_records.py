"""Usage records: document ids, days, and what a record keeps of a request."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.context import RequestContext
from gateway.usage.records import (
    UsageRecord,
    daily_doc_id,
    detection_counts,
    escape_id_part,
    ledger_id,
    quota_doc_id,
    record_from_context,
    seconds_until_utc_day_end,
)


@pytest.mark.parametrize(
    "principal",
    ["anonymous", "key:lab-script", "firebase:Ab12Cd", "google:svc@proj.iam.gserviceaccount.com"],
)
def test_ordinary_principals_are_readable_in_doc_ids(principal):
    assert daily_doc_id(principal, "eos", "2025-03-01") == f"{principal}__eos__2025-03-01"


@pytest.mark.parametrize(
    "principal",
    ["google:a/b@x.com", "key:__x__", "firebase:u_1", "key:%2F", "key:ü/é", "__", ".", ".."],
)
def test_escaped_doc_ids_are_valid_and_unambiguous(principal):
    doc_id = daily_doc_id(principal, "my_service", "2025-03-01")
    assert "/" not in doc_id
    assert doc_id.count("__") == 2  # only the two separators
    assert doc_id not in (".", "..")
    assert not (doc_id.startswith("__") and doc_id.endswith("__"))
    assert len(doc_id.encode()) <= 1500


def test_escaping_is_injective_on_tricky_pairs():
    pairs = [("a_", "a%5F"), ("a/b", "a%2Fb"), ("a__b", "a_%5Fb")]
    for left, right in pairs:
        assert escape_id_part(left) != escape_id_part(right)


def test_very_long_principals_get_a_hashed_id():
    doc_id = daily_doc_id("key:" + "x" * 2000, "eos", "2025-03-01")
    assert doc_id.startswith("sha256-") and doc_id.endswith("__2025-03-01")
    assert len(doc_id) < 100


def test_retry_after_counts_to_the_next_utc_midnight():
    assert seconds_until_utc_day_end(datetime(2025, 3, 1, 23, 59, 30, tzinfo=UTC)) == 30
    assert seconds_until_utc_day_end(datetime(2025, 3, 1, 0, 0, 0, tzinfo=UTC)) == 86400
    assert seconds_until_utc_day_end(datetime(2025, 3, 1, 23, 59, 59, 900000, tzinfo=UTC)) == 1


def test_record_from_a_failed_request_keeps_what_was_known():
    ctx = RequestContext(method="POST", path="/v1/services/eos:detect")
    ctx.route, ctx.service, ctx.principal, ctx.auth_method = "detect", "eos", "key:a", "api_key"
    ctx.instances, ctx.image = 2, {"bytes": 10, "width": None, "height": None, "format": None}
    ctx.status, ctx.error_code = 422, "undecodable_image"
    rec = record_from_context(ctx, now=datetime(2025, 3, 1, 12, tzinfo=UTC))
    assert rec.day == "2025-03-01"
    assert rec.daily_id == "key:a__eos__2025-03-01"
    assert rec.fields["status"] == 422 and rec.fields["error_code"] == "undecodable_image"
    assert rec.fields["image"] == {"bytes": 10, "width": None, "height": None, "format": None}
    assert rec.fields["instances"] == 2 and rec.fields["images"] == 0
    assert rec.increments == {"requests": 1, "errors": 1, "images": 0, "tiles": 0,
                              "detections": 0, "counted": 0, "raw_detections": 0}  # fmt: skip
    assert UsageRecord.from_json(rec.to_json()) == rec


@pytest.mark.parametrize(
    ("uncut", "threshold", "counted", "raw"), [(False, 0.3, 7, 0), (True, None, 0, 7)]
)
def test_a_count_at_a_threshold_and_raw_detections_are_kept_apart(uncut, threshold, counted, raw):
    ctx = RequestContext(method="POST", path="/v1/models/eos:predict")
    ctx.route, ctx.service, ctx.principal, ctx.instances = "predict", "eos", "key:a", 1
    ctx.detections, ctx.uncut, ctx.threshold = 7, uncut, threshold
    rec = record_from_context(ctx)
    assert (rec.fields["counted"], rec.fields["raw_detections"]) == (counted, raw)
    assert (rec.increments["counted"], rec.increments["raw_detections"]) == (counted, raw)
    assert rec.fields["detections"] == rec.increments["detections"] == 7
    assert detection_counts(rec.fields) == (counted, raw)


@pytest.mark.parametrize(
    ("route", "threshold", "expected"),
    [
        ("detect", 0.3, (5, 0)),  # :detect always cuts at a threshold
        ("predict", 0.0, (0, 5)),  # :predict without one answered every detection
        ("predict", None, (0, 5)),
        ("v2_infer", 0.0, (0, 5)),
        ("predict", 0.5, (5, 0)),  # asked for a threshold: a count
        ("vertex", 0.0, (5, 0)),  # Vertex's answers always have their confidenceThreshold
    ],
)
def test_records_from_before_the_split_are_read_by_their_route(route, threshold, expected):
    old = {"route": route, "threshold": threshold, "detections": 5}
    assert detection_counts(old) == expected
    assert detection_counts({**old, "counted": None, "raw_detections": None}) == expected


def test_an_old_spooled_record_gets_the_new_counters():
    old = {
        "request_id": "r1", "time": "2025-03-01T12:00:00+00:00", "principal": "key:a",
        "service": "eos",
        "fields": {"route": "predict", "threshold": 0.0, "detections": 4, "day": "2025-03-01"},
        "increments": {"requests": 1, "errors": 0, "images": 1, "tiles": 2, "detections": 4},
    }  # fmt: skip
    rec = UsageRecord.from_json(old)
    assert (rec.increments["counted"], rec.increments["raw_detections"]) == (0, 4)
    assert rec.fields["raw_detections"] == 4


def test_unknown_service_and_principal_fall_back_to_placeholders():
    ctx = RequestContext(method="POST", path="/x")
    ctx.principal, ctx.service, ctx.status = "", None, 401
    rec = record_from_context(ctx)
    assert (rec.principal, rec.service) == ("anonymous", "-")


def test_long_principals_keep_one_key_for_records_and_quotas():
    principal = "google:" + "x" * 5000 + "@example.com"
    ctx = RequestContext(method="POST", path="/")
    ctx.principal, ctx.service = principal, "eos"
    rec = record_from_context(ctx)
    assert rec.principal == principal and rec.fields["principal"] == principal
    for doc_id in (rec.daily_id, quota_doc_id(principal), ledger_id(principal, "images", "d")):
        assert len(doc_id.encode()) <= 1500
    assert quota_doc_id(principal) != quota_doc_id(principal + "y")
    assert ledger_id(principal, "images", "d") != ledger_id(principal + "y", "images", "d")
