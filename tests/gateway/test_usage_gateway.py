"""Usage records, counters, quotas and the report through a running gateway process.

Real parts over real sockets: functions-framework serving the gateway, the Firestore
emulator, the embedded SQLite store, and ``python -m gateway usage`` as its own process.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

import pytest
from helpers import jpeg, run_cli, sha, today
from procs import start_gateway
from synthetic import make_slide
from usage_helpers import daily_counters, run_clients

from gateway.usage.records import daily_doc_id, ledger_id
from gateway.usage.report import percentile
from gateway.usage.sqlite_store import SQLiteStore

# Every test here runs the gateway (or the CLI) as its own process.
pytestmark = pytest.mark.process

LAB_KEY = "lab-key-0f9e8d7c6b5a"
CAM_KEY = "cam-key-1a2b3c4d5e6f"


AUTH = {
    "required": True,
    "api_keys": [
        {"id": "lab-script", "sha256": sha(LAB_KEY)},
        {"id": "cam", "sha256": sha(CAM_KEY)},
    ],
    "api_keys_firestore": False,
}


@pytest.fixture(scope="module")
def slide() -> bytes:
    """A small slide with two eosinophils."""
    return jpeg(make_slide(200, 150, [(60, 60, 36), (140, 90, 38)], seed=5), quality=90)


def post(url: str, body: bytes, key: str | None, content_type: str = "image/jpeg"):
    """(status, headers, json body) of one detect request; never raises for HTTP errors."""
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["X-API-Key"] = key
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def detect_url(gw, service: str = "eos") -> str:
    return f"{gw.url}/v1/services/{service}:detect"


def usage_docs(client, prefix: str = "") -> dict[str, dict]:
    return {s.id: s.to_dict() for s in client.collection(f"{prefix}usage").stream()}


def daily_doc(client, principal: str, service: str = "eos") -> dict:
    return daily_counters(client, principal, service, today())


def run_report(env: dict[str, str], *args: str, cwd=None) -> dict:
    out = run_cli("usage", "--json", *args, env=env, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def fs_config(**usage) -> dict:
    return {
        "auth": AUTH,
        "usage": {"firestore": {"retry_after_s": 0.5, "write_timeout_s": 2}} | usage,
    }


def test_mixed_requests_records_counters_and_report(firestore_emulator, firestore_project, slide):
    env = firestore_emulator.env(firestore_project)
    gw = start_gateway(fs_config(), env=env)
    try:
        sent: dict[str, int] = {}
        for key, body in [
            (LAB_KEY, slide),
            (LAB_KEY, slide),
            (CAM_KEY, slide),
            (LAB_KEY, b"definitely not an image"),
            ("wrong-key", slide),
            (None, slide),
        ]:
            status, headers, _ = post(detect_url(gw), body, key)
            sent[headers["X-Request-Id"]] = status
        status, headers, _ = post(detect_url(gw, "nope"), slide, LAB_KEY)
        sent[headers["X-Request-Id"]] = status
    finally:
        gw.stop()
    statuses = sorted(sent.values())
    assert statuses.count(200) == 3 and 401 in statuses and 404 in statuses

    client = firestore_emulator.client(firestore_project)
    docs = usage_docs(client)
    # refusals before admission (bad or no credentials, a made-up service) are logged only
    assert set(docs) == {rid for rid, status in sent.items() if status not in (401, 404)}
    for rid in docs:
        assert docs[rid]["status"] == sent[rid]
    good = [d for d in docs.values() if d["status"] == 200]
    for d in good:
        assert d["image"]["format"] == "jpeg"
        assert (d["image"]["width"], d["image"]["height"]) == (200, 150)
        assert d["image"]["bytes"] == len(slide)
        assert d["instances"] == 1 and d["tiles"] >= 1
        assert d["backend"]["model"]
    bad_image = next(d for d in docs.values() if d["principal"] == "key:lab-script"
                     and 400 <= d["status"] < 500 and d["service"] == "eos")  # fmt: skip
    assert bad_image["error_code"] and bad_image["images"] == 0
    assert not [d for d in docs.values() if d["principal"] == "anonymous"]
    # no secrets or addresses anywhere in what was stored
    text = json.dumps(docs, default=str)
    for secret in (LAB_KEY, CAM_KEY, "wrong-key", "127.0.0.1"):
        assert secret not in text

    lab = daily_doc(client, "key:lab-script")
    lab_good = [d for d in good if d["principal"] == "key:lab-script"]
    assert (lab["requests"], lab["errors"], lab["images"]) == (3, 1, 2)
    assert lab["detections"] == sum(d["detections"] for d in lab_good)
    assert daily_doc(client, "key:cam")["requests"] == 1
    daily_ids = {snap.id for snap in client.collection("usage_daily").stream()}
    assert daily_ids == {daily_doc_id(p, "eos", today()) for p in ("key:lab-script", "key:cam")}

    report = run_report(env)
    assert report["source"].startswith(f"firestore:{firestore_project}/")
    rows = {(r["principal"], r["service"]): r for r in report["rows"]}
    row = rows[("key:lab-script", "eos")]
    assert row["day"] == today()
    assert (row["requests"], row["images"], row["errors"]) == (3, 2, 1)
    assert row["counted"] == lab["detections"] == lab["counted"] and row["raw_detections"] == 0
    lab_latency = [d["latency_ms"]["total"] for d in docs.values()
                   if d["principal"] == "key:lab-script" and d["service"] == "eos"]  # fmt: skip
    assert row["p50_ms"] == percentile(lab_latency, 50)
    assert row["p95_ms"] == percentile(lab_latency, 95)
    only = run_report(env, "--principal", "key:cam", "--since", today())
    assert [(r["principal"], r["requests"]) for r in only["rows"]] == [("key:cam", 1)]
    assert run_report(env, "--since", "2999-01-01")["rows"] == []


def test_concurrent_requests_keep_counters_exact(firestore_emulator, firestore_project, slide):
    gw = start_gateway(fs_config(), env=firestore_emulator.env(firestore_project))
    ids: list[str] = []
    lock = threading.Lock()

    def client_loop(key: str) -> None:
        for _ in range(5):
            status, headers, _ = post(detect_url(gw), slide, key)
            assert status == 200
            with lock:
                ids.append(headers["X-Request-Id"])

    try:
        threads = [threading.Thread(target=client_loop, args=(k,)) for k in [LAB_KEY] * 4]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
    finally:
        gw.stop()
    assert len(ids) == 20
    client = firestore_emulator.client(firestore_project)
    assert set(usage_docs(client)) == set(ids)
    lab = daily_doc(client, "key:lab-script")
    assert (lab["requests"], lab["images"], lab["errors"]) == (20, 20, 0)


def test_quota_refusal_is_429_with_retry_after(firestore_emulator, firestore_project, slide):
    config = fs_config()
    config["quotas"] = {
        "default": {"daily_images": 2},
        "principals": {"key:lab-script": {"daily_images": 3}},
    }
    gw = start_gateway(config, env=firestore_emulator.env(firestore_project))
    try:
        lab = [post(detect_url(gw), slide, LAB_KEY) for _ in range(4)]
        cam = [post(detect_url(gw), slide, CAM_KEY) for _ in range(3)]
    finally:
        gw.stop()
    assert [s for s, _, _ in lab] == [200, 200, 200, 429]
    assert [s for s, _, _ in cam] == [200, 200, 429]
    status, headers, body = lab[3]
    assert body["code"] == "quota_exceeded"
    assert body["request_id"] == headers["X-Request-Id"]
    now = datetime.now(UTC)
    to_midnight = 86400 - (now.hour * 3600 + now.minute * 60 + now.second)
    assert abs(int(headers["Retry-After"]) - to_midnight) <= 120
    client = firestore_emulator.client(firestore_project)
    daily = daily_doc(client, "key:lab-script")
    assert (daily["requests"], daily["errors"], daily["images"]) == (4, 1, 3)
    refused = usage_docs(client)[headers["X-Request-Id"]]
    assert (refused["status"], refused["error_code"], refused["images"]) == (
        429,
        "quota_exceeded",
        0,
    )


def test_firestore_outage_loses_no_record_and_counts_each_once(
    firestore_emulator, firestore_project, slide
):
    """Two gunicorn workers share one spool; the emulator goes away mid-run and comes back."""
    env = firestore_emulator.env(firestore_project) | {"WORKERS": "2"}
    gw = start_gateway(fs_config(), env=env)
    ids: list[str] = []

    def send(n: int) -> None:
        for _ in range(n):
            status, headers, _ = post(detect_url(gw), slide, LAB_KEY)
            assert status == 200, "requests must be served while Firestore is away"
            ids.append(headers["X-Request-Id"])

    client = firestore_emulator.client(firestore_project)
    try:
        send(3)
        firestore_emulator.stop()
        send(6)
        firestore_emulator.start()
        deadline = time.monotonic() + 60
        while set(usage_docs(client)) != set(ids) and time.monotonic() < deadline:
            send(1)  # later requests flush the spool
            time.sleep(0.3)
        log = gw.log_text()
    finally:
        gw.stop()
    docs = usage_docs(client)
    assert set(docs) == set(ids)
    assert sum(1 for d in docs.values() if d.get("spooled")) >= 6
    daily = daily_doc(client, "key:lab-script")
    assert daily["requests"] == len(ids)
    assert daily["images"] == len(ids)
    warned = [
        json.loads(line)
        for line in log.splitlines()
        if line.startswith("{") and '"usage_record"' in line
    ]
    assert warned and all(w["severity"] == "WARNING" for w in warned)
    assert {w["usage_record"]["request_id"] for w in warned} <= set(ids)
    assert LAB_KEY not in log


def test_sqlite_default_and_report(tmp_path, slide):
    config = {"auth": AUTH, "quotas": {"default": {"daily_images": 3}}}
    gw = start_gateway(config, workdir=tmp_path)
    try:
        results = [post(detect_url(gw), slide, LAB_KEY) for _ in range(4)]
        results.append(post(detect_url(gw), b"junk", CAM_KEY))
    finally:
        gw.stop()
    assert [s for s, _, _ in results][:4] == [200, 200, 200, 429]
    store = SQLiteStore(tmp_path / ".gateway" / "usage.sqlite3")
    records = {r["request_id"]: r for r in store.records()}
    assert set(records) == {h["X-Request-Id"] for _, h, _ in results}
    daily = store.daily("key:lab-script", "eos", today())
    assert (daily["requests"], daily["errors"], daily["images"]) == (4, 1, 3)
    assert store.daily("key:cam", "eos", today())["errors"] == 1

    env = {"GATEWAY_CONFIG": str(tmp_path / "gateway-config.json")}
    report = run_report(env, cwd=tmp_path)
    assert report["source"].startswith("sqlite:")
    rows = {r["principal"]: r for r in report["rows"]}
    assert (rows["key:lab-script"]["requests"], rows["key:lab-script"]["images"]) == (4, 3)
    assert rows["key:lab-script"]["errors"] == 1
    assert rows["key:cam"]["errors"] == 1
    assert report["total"]["requests"] == 5

    # a run from another folder names the database it did not find
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = run_cli("usage", env=env, cwd=elsewhere)
    assert out.returncode == 1 and out.stdout == ""
    assert str(elsewhere / ".gateway" / "usage.sqlite3") in out.stderr
    assert "GATEWAY_CONFIG" in out.stderr

    # the same question as CSV: a line per principal (without its prefix) and a total
    out = run_cli("usage", "--by", "principal", "--principal", "lab-script", "--since",
                  "this-week", "--csv", env=env, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = [line.split(",") for line in out.stdout.splitlines()]
    assert lines[0][:4] == ["principal", "requests", "images", "counted"]
    assert lines[1][:3] == ["key:lab-script", "4", "3"] and lines[2][:3] == ["TOTAL", "4", "3"]


def test_request_rate_counts_failing_requests_over_http(
    firestore_emulator, firestore_project, slide
):
    """Undecodable images are not free: they use the caller's requests_per_minute."""
    config = fs_config()
    config["quotas"] = {"default": {"requests_per_minute": 3}}
    gw = start_gateway(config, env=firestore_emulator.env(firestore_project))
    try:
        for _ in range(2):  # each UTC minute has its own allowance: measure within one
            minute = datetime.now(UTC).strftime("%H:%M")
            results = [post(detect_url(gw), b"not an image", LAB_KEY) for _ in range(3)]
            results += [post(detect_url(gw), slide, LAB_KEY) for _ in range(2)]
            if datetime.now(UTC).strftime("%H:%M") == minute:
                break
        cam = post(detect_url(gw), slide, CAM_KEY)
    finally:
        gw.stop()
    statuses = [s for s, _, _ in results]
    assert 429 not in statuses[:3] and all(400 <= s < 500 for s in statuses[:3])
    assert statuses[3:] == [429, 429]
    _, headers, body = results[3]
    assert body["code"] == "quota_exceeded" and "per minute" in body["error"]
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert cam[0] == 200  # the rate is per principal


def run_replay(env: dict[str, str], *args: str, cwd=None, stdin: str | None = None):
    out = run_cli("replay-usage", "--json", *args, env=env, cwd=cwd, stdin=stdin)
    return out.returncode, json.loads(out.stdout) if out.stdout.strip() else None, out.stderr


def test_records_of_a_lost_instance_are_replayed_from_its_logs(
    firestore_emulator, firestore_project, slide, tmp_path
):
    """Firestore is away until the instance is gone, and its spool with it: the records live
    on only in the log.  Replaying the log stores each once, with its counters; replaying it
    again, or as a Cloud Logging export, changes nothing."""
    spool = tmp_path / "spool" / "usage-spool.sqlite3"
    env = firestore_emulator.env(firestore_project)
    gw = start_gateway(fs_config(spool_path=str(spool)), env=env, workdir=tmp_path)
    client = firestore_emulator.client(firestore_project)
    try:
        status, headers, _ = post(detect_url(gw), slide, LAB_KEY)
        stored_first = headers["X-Request-Id"]
        assert status == 200
        firestore_emulator.stop()
        lost = []
        for body in (slide, slide, b"junk", slide):
            _, headers, _ = post(detect_url(gw), body, LAB_KEY)
            lost.append(headers["X-Request-Id"])
    finally:
        gw.stop()  # the instance goes away while Firestore is still down
        firestore_emulator.start()
    assert spool.exists()
    for path in spool.parent.iterdir():  # its /tmp goes with it
        path.unlink()
    log = tmp_path / "gateway.log"
    log.write_text(gw.log_text())
    assert set(usage_docs(client)) == {stored_first}

    config_env = env | {"GATEWAY_CONFIG": str(tmp_path / "gateway-config.json")}
    code, result, err = run_replay(config_env, str(log), cwd=tmp_path)
    assert code == 0, err
    assert (result["stored"], result["already_stored"]) == (4, 0)
    assert result["store"].startswith(f"firestore:{firestore_project}/")
    docs = usage_docs(client)
    assert set(docs) == {stored_first, *lost}
    assert all(docs[i]["spooled"] is True for i in lost)
    assert docs[lost[2]]["status"] == 415
    daily = daily_doc(client, "key:lab-script")
    assert (daily["requests"], daily["images"], daily["errors"]) == (5, 4, 1)

    code, again, err = run_replay(config_env, str(log), cwd=tmp_path)
    assert code == 0, err
    assert (again["stored"], again["already_stored"]) == (0, 4)
    entries = [
        {"severity": "WARNING", "jsonPayload": json.loads(line)}
        for line in log.read_text().splitlines()
        if line.startswith("{")
    ]
    code, export, err = run_replay(config_env, cwd=tmp_path, stdin=json.dumps(entries))
    assert code == 0, err
    assert (export["stored"], export["already_stored"]) == (0, 4)
    assert daily_doc(client, "key:lab-script")["requests"] == 5


def test_spooled_records_are_sent_when_the_instance_stops(
    firestore_emulator, firestore_project, slide, tmp_path
):
    """Firestore comes back but no request follows to flush the spool: the worker sends
    the spooled records in its shutdown grace, instead of leaving them in /tmp."""
    spool = tmp_path / "usage-spool.sqlite3"
    env = firestore_emulator.env(firestore_project) | {"WORKERS": "2"}
    gw = start_gateway(fs_config(spool_path=str(spool)), env=env, workdir=tmp_path)
    client = firestore_emulator.client(firestore_project)
    ids = []
    try:
        firestore_emulator.stop()
        for _ in range(5):
            status, headers, _ = post(detect_url(gw), slide, LAB_KEY)
            assert status == 200
            ids.append(headers["X-Request-Id"])
        firestore_emulator.start()
        assert usage_docs(client) == {}
    finally:
        code = gw.stop()
    log = gw.log_text()
    assert code == 0
    docs = usage_docs(client)
    assert set(docs) == set(ids)
    assert all(d["spooled"] is True for d in docs.values())
    assert daily_doc(client, "key:lab-script")["requests"] == 5
    assert '"message":"usage: spool sent at shutdown"' in log


def test_a_quota_holds_across_four_instances(firestore_emulator, firestore_project, slide):
    """Four gateway processes as separate instances (each its own working directory and
    spool) on one Firestore; sixteen clients of one principal with a quota of 60 send until
    they are refused.  Served stays within 90-105% of the quota, and every answered request
    has its record and its counters."""
    config = fs_config()
    config["quotas"] = {"principals": {"key:lab-script": {"daily_images": 60}}}
    env = firestore_emulator.env(firestore_project) | {"WORKERS": "1"}
    fleet = [start_gateway(config, env=env, start=False) for _ in range(4)]
    try:
        for gw in fleet:
            gw.start()
        answers = run_clients([detect_url(gw) for gw in fleet], 16, slide, LAB_KEY,
                              until_refused=True)  # fmt: skip
    finally:
        for gw in fleet:
            gw.stop()
    assert {a.status for a in answers} <= {200, 429}
    served = sum(1 for a in answers if a.status == 200)
    assert 54 <= served <= 63, f"served {served} of a quota of 60"
    assert len({a.instance for a in answers if a.status == 200}) >= 2
    client = firestore_emulator.client(firestore_project)
    docs = usage_docs(client)
    assert set(docs) == {a.request_id for a in answers}
    lab = daily_doc(client, "key:lab-script")
    assert (lab["requests"], lab["images"], lab["errors"]) == (len(answers), served,
                                                               len(answers) - served)  # fmt: skip


def test_a_stopping_instance_gives_back_its_unused_allowance(
    firestore_emulator, firestore_project, slide
):
    """A request takes a block from the ledger; at SIGTERM the instance returns what it did
    not use (a negative entry), so the ledgers hold exactly what was served."""
    config = fs_config()
    config["quotas"] = {"principals": {"key:lab-script": {"daily_images": 400}}}
    env = firestore_emulator.env(firestore_project) | {"WORKERS": "1"}
    client = firestore_emulator.client(firestore_project)
    base = ledger_id("key:lab-script", "images", today())

    def entries() -> list[int]:  # a limit of 400 is split into 8 ledgers of 50
        ledgers = client.collection("usage_allowances")
        return [
            s.to_dict()["amount"]
            for p in range(8)
            for s in ledgers.document(f"{base}__{p}").collection("entries").stream()
        ]

    for served in (1, 3):
        gw = start_gateway(config, env=env)
        try:
            assert [post(detect_url(gw), slide, LAB_KEY)[0] for _ in range(served)] == [
                200
            ] * served
            assert sum(entries()) > 4  # a block is more than the request needs
        finally:
            assert gw.stop() == 0
        assert any(amount < 0 for amount in entries())
    assert sum(entries()) == 4


def parse_rate_limit(value: str) -> dict[str, dict[str, int]]:
    """A RateLimit or RateLimit-Policy field (draft-ietf-httpapi-ratelimit-headers-10)."""
    out = {}
    for item in value.split(", "):
        name, *params = item.split(";")
        assert name.startswith('"') and name.endswith('"'), value
        out[name.strip('"')] = {k: int(v) for k, v in (p.split("=") for p in params)}
    return out


def get_usage(gw, key: str):
    req = urllib.request.Request(f"{gw.url}/v1/usage", headers={"X-API-Key": key})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return dict(resp.headers), json.loads(resp.read())


def test_usage_questions_answered_from_firestore(firestore_emulator, firestore_project, slide):
    """Counts kept apart by meaning, asked by a caller (GET /v1/usage, its RateLimit
    fields) and by a manager (the report), from the same Firestore records."""
    env = firestore_emulator.env(firestore_project)
    quotas = {"default": {"daily_images": 20, "requests_per_minute": 100}}
    gw = start_gateway(fs_config() | {"quotas": quotas}, env=env)
    predict = f"{gw.url}/v1/models/eos:predict"
    body = json.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(slide).decode()}}]
                       * 2}).encode()  # fmt: skip
    try:
        status, headers, found = post(detect_url(gw), slide, LAB_KEY)
        assert status == 200
        counted = found["count"]
        assert parse_rate_limit(headers["RateLimit-Policy"]) == {
            "daily": {"q": 20, "w": 86400}, "minute": {"q": 100, "w": 60}}  # fmt: skip
        assert parse_rate_limit(headers["RateLimit"])["daily"]["r"] == 19
        status, headers, answer = post(predict, body, LAB_KEY, "application/json")
        assert status == 200
        raw = sum(p["num_detections"] for p in answer["predictions"])
        assert parse_rate_limit(headers["RateLimit"])["daily"]["r"] == 17
        status, _, answer = post(predict + "?threshold=0.3", body, LAB_KEY, "application/json")
        counted += sum(p["num_detections"] for p in answer["predictions"])
        assert post(detect_url(gw), slide, CAM_KEY)[0] == 200

        headers, mine = get_usage(gw, LAB_KEY)
    finally:
        gw.stop()
    assert mine["principal"] == "key:lab-script" and mine["day"] == today()
    assert mine["usage"] == {"requests": 3, "images": 5, "counted": counted,
                             "raw_detections": raw, "errors": 0}  # fmt: skip
    assert mine["services"] == {"eos": mine["usage"]}
    assert mine["quota"]["daily_images"] | {"reset_s": 0} == {
        "limit": 20, "used": 5, "remaining": 15, "reset_s": 0}  # fmt: skip
    assert parse_rate_limit(headers["RateLimit"])["daily"]["r"] == 15
    assert mine["quota"]["requests_per_minute"]["limit"] == 100

    client = firestore_emulator.client(firestore_project)
    lab = daily_doc(client, "key:lab-script")
    assert (lab["counted"], lab["raw_detections"]) == (counted, raw)
    docs = [d for d in usage_docs(client).values() if d["principal"] == "key:lab-script"]
    assert sorted((d["route"], str(d["threshold"])) for d in docs) == [
        ("detect", "0.3"), ("predict", "0.3"), ("predict", "None")]  # fmt: skip

    report = run_report(env, "--by", "principal", "--principal", "lab-script",
                        "--since", "7d", "--until", "today")  # fmt: skip
    assert report["source"].startswith(f"firestore:{firestore_project}/")
    assert [r["principal"] for r in report["rows"]] == ["key:lab-script"]
    row = report["rows"][0]
    assert (row["images"], row["counted"], row["raw_detections"]) == (5, counted, raw)
    assert report["total"]["requests"] == 3
    every = run_report(env, "--by", "service")
    assert every["total"]["requests"] == 4 and every["rows"][0]["service"] == "eos"
