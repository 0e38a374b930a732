"""``GET /v1/usage`` and the ``RateLimit`` fields, in-process on the embedded detector with
the SQLite store: a caller's own usage of today, counts kept apart by meaning, and what is
left of its quotas, said the same way in the body and in the header fields."""

from __future__ import annotations

import json
import re
from typing import Any

import flask
import pytest
from helpers import b64, jpeg, sha, today
from synthetic import make_slide

from gateway.catalog import parse_config
from gateway.rest.app import handle
from gateway.runtime import build_gateway, current_gateway, set_gateway

LAB, CAM, BIG = "lab-key-0f9e8d7c6b5a", "cam-key-1a2b3c4d5e6f", "big-key-99aa88bb77cc"
# draft-ietf-httpapi-ratelimit-headers-10: a List of String items with Integer parameters
POLICY_ITEM = re.compile(r'^"(daily|minute)";q=(\d+);w=(\d+)$')
LIMIT_ITEM = re.compile(r'^"(daily|minute)";r=(\d+);t=(\d+)$')


def config(tmp_path, quotas: dict | None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "auth": {
            "required": True,
            "api_keys": [
                {"id": name, "sha256": sha(key)}
                for name, key in (("lab-script", LAB), ("cam", CAM), ("big", BIG))
            ],  # fmt: skip
            "api_keys_firestore": False,
        },
        "usage": {
            "store": "sqlite",
            "sqlite": {"path": str(tmp_path / "usage.sqlite3")},
            "spool_path": str(tmp_path / "spool.sqlite3"),
        },
    }
    if quotas is not None:
        cfg["quotas"] = quotas
    return cfg


@pytest.fixture
def client_for(tmp_path):
    """A test client of a gateway built in this process from the given quotas."""
    before = current_gateway()

    def make(quotas: dict | None) -> flask.testing.FlaskClient:
        set_gateway(build_gateway(parse_config(config(tmp_path, quotas))))
        app = flask.Flask(__name__)

        def entry(path: str = "") -> flask.Response:
            return handle(flask.request)

        app.add_url_rule("/", "root", entry, methods=["GET", "POST"])
        app.add_url_rule("/<path:path>", "any", entry, methods=["GET", "POST"])
        return app.test_client()

    yield make
    set_gateway(before)


@pytest.fixture(scope="module")
def slide() -> bytes:
    return jpeg(make_slide(200, 150, [(60, 60, 36), (140, 90, 38)], seed=5), quality=90)


def parse_list(value: str, item: re.Pattern[str]) -> dict[str, tuple[int, int]]:
    found = {}
    for part in value.split(", "):
        m = item.match(part)
        assert m, f"not a list item of the draft's form: {part!r} in {value!r}"
        found[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return found


def rate_limits(resp) -> tuple[dict, dict]:
    return (
        parse_list(resp.headers["RateLimit-Policy"], POLICY_ITEM),
        parse_list(resp.headers["RateLimit"], LIMIT_ITEM),
    )


def usage(client, key: str | None):
    headers = {"X-API-Key": key} if key else {}
    return client.get("/v1/usage", headers=headers)


QUOTAS = {
    "default": {"daily_images": 5, "requests_per_minute": 30},
    "principals": {"key:big": {"daily_images": None, "requests_per_minute": 100}},
}


def test_a_caller_sees_its_own_usage_counts_apart_and_its_quota(client_for, slide):
    client = client_for(QUOTAS)
    key = {"X-API-Key": LAB}
    detect = client.post("/v1/services/eos:detect", data=slide, headers={
        **key, "Content-Type": "image/jpeg"})  # fmt: skip
    assert detect.status_code == 200
    counted = detect.get_json()["count"]
    body = {"instances": [{"image_bytes": {"b64": b64(slide)}}] * 2}
    predict = client.post("/v1/models/eos:predict", json=body, headers=key)
    assert predict.status_code == 200
    raw = sum(p["num_detections"] for p in predict.get_json()["predictions"])
    cut = client.post("/v1/models/eos:predict?threshold=0.3", json=body, headers=key)
    at_threshold = sum(p["num_detections"] for p in cut.get_json()["predictions"])
    counted += at_threshold
    bad = client.post("/v1/services/eos:detect", data=b"junk", headers={
        **key, "Content-Type": "image/jpeg"})  # fmt: skip
    assert bad.status_code == 415
    assert client.post("/v1/services/eos:detect", data=slide, headers={
        "X-API-Key": CAM, "Content-Type": "image/jpeg"}).status_code == 200  # fmt: skip

    resp = usage(client, LAB)
    assert resp.status_code == 200
    doc = resp.get_json()
    assert doc["principal"] == "key:lab-script" and doc["day"] == today()
    assert doc["usage"] == {"requests": 4, "images": 5, "counted": counted,
                            "raw_detections": raw, "errors": 1}  # fmt: skip
    assert raw > at_threshold > 0  # the same slides uncut: every low-scoring detection too
    assert doc["services"] == {"eos": doc["usage"]}
    daily = doc["quota"]["daily_images"]
    assert (daily["limit"], daily["used"], daily["remaining"]) == (5, 5, 0)
    assert 0 < daily["reset_s"] <= 86400
    minute = doc["quota"]["requests_per_minute"]
    assert minute["limit"] == 30 and minute["remaining"] <= 30 - 4
    policy, left = rate_limits(resp)
    assert policy == {"daily": (5, 86400), "minute": (30, 60)}
    assert left["daily"] == (0, daily["reset_s"])
    assert left["minute"][0] == minute["remaining"]

    # asking is free: it takes nothing from the rate and is not recorded
    again = usage(client, LAB).get_json()
    assert again["usage"] == doc["usage"]
    assert again["quota"]["requests_per_minute"]["remaining"] == minute["remaining"]

    # another caller sees only its own
    cam = usage(client, CAM).get_json()
    assert cam["principal"] == "key:cam" and cam["usage"]["requests"] == 1


def test_every_model_answer_carries_the_callers_rate_limits(client_for, slide):
    client = client_for(QUOTAS)
    seen = []
    for _ in range(6):
        resp = client.post("/v1/services/eos:detect", data=slide, headers={
            "X-API-Key": LAB, "Content-Type": "image/jpeg"})  # fmt: skip
        policy, left = rate_limits(resp)
        assert policy == {"daily": (5, 86400), "minute": (30, 60)}
        seen.append((resp.status_code, left["daily"][0], left["minute"][0]))
    statuses = [s for s, _, _ in seen]
    assert statuses == [200] * 5 + [429]
    daily_left = [d for _, d, _ in seen]
    assert daily_left == [4, 3, 2, 1, 0, 0]
    minute_left = [m for _, _, m in seen]
    assert minute_left == sorted(minute_left, reverse=True) and minute_left[0] <= 29
    # a failed request gives its image back, and its answer says so
    bad = client.post("/v1/services/eos:detect", data=b"junk", headers={
        "X-API-Key": CAM, "Content-Type": "image/jpeg"})  # fmt: skip
    assert bad.status_code == 415
    assert rate_limits(bad)[1]["daily"][0] == 5
    # an unlimited daily quota has no daily policy; the rate still has one
    big = client.post("/v1/services/eos:detect", data=slide, headers={
        "X-API-Key": BIG, "Content-Type": "image/jpeg"})  # fmt: skip
    assert big.headers["RateLimit-Policy"] == '"minute";q=100;w=60'
    assert parse_list(big.headers["RateLimit"], LIMIT_ITEM)["minute"][0] <= 99
    # refused before admission: nobody's limits
    nobody = client.post("/v1/services/eos:detect", data=slide, headers={
        "X-API-Key": "wrong", "Content-Type": "image/jpeg"})  # fmt: skip
    assert nobody.status_code == 401 and "RateLimit" not in nobody.headers


def test_without_quotas_there_are_no_limits_and_usage_is_still_answered(client_for, slide):
    client = client_for(None)
    resp = client.post("/v1/services/eos:detect", data=slide, headers={
        "X-API-Key": LAB, "Content-Type": "image/jpeg"})  # fmt: skip
    assert resp.status_code == 200
    assert "RateLimit-Policy" not in resp.headers and "RateLimit" not in resp.headers
    doc = usage(client, LAB)
    assert doc.status_code == 200 and "RateLimit-Policy" not in doc.headers
    body = doc.get_json()
    assert body["usage"]["images"] == 1
    assert body["quota"]["daily_images"] == {"limit": None, "used": 1, "remaining": None,
                                             "reset_s": None}  # fmt: skip


def test_usage_is_credentialed(client_for):
    client = client_for(QUOTAS)
    for key in (None, "wrong"):
        resp = usage(client, key)
        assert resp.status_code == 401
        assert json.loads(resp.get_data())["code"] == "unauthenticated"
    assert client.post("/v1/usage").status_code == 405
