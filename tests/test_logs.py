"""Log lines of a running gateway: one JSON access line per request, error lines, trace
ids linked to the project, the readable local form, and no secrets or image bytes."""

from __future__ import annotations

import base64
import io
import json
import re
import urllib.error
import urllib.request

import pytest
from helpers import png, sha
from procs import start_gateway
from synthetic import make_slide

from gateway import logs
from gateway.context import RequestContext

API_KEY = "log-test-key-0123456789abcdef-SECRET"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzZWNyZXQtdG9rZW4ifQ.c2lnbmF0dXJlLXNlY3JldA"


def _call(url, data=None, headers=None, method="GET"):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


@pytest.mark.process
def test_access_and_error_lines_of_a_running_gateway() -> None:
    digest = sha(API_KEY)
    config = {
        "auth": {
            "api_keys": [{"id": "logs", "sha256": digest}],
            "google": {"audiences": ["https://gateway.example"]},
            "certs_urls": {"google": "http://127.0.0.1:9/unreachable"},
        },
        "usage": {"enabled": False},
    }
    gw = start_gateway(config, env={"GOOGLE_CLOUD_PROJECT": "eos-project"})
    slide = png(make_slide(400, 240, [(100, 100, 44), (250, 150, 44)], seed=1))
    b64 = base64.b64encode(slide)
    try:
        ok = _call(
            f"{gw.url}/v1/services/eos:detect",
            data=slide,
            headers={
                "Content-Type": "image/png",
                "X-API-Key": API_KEY,
                "X-Cloud-Trace-Context": f"{TRACE}/1;o=1",
            },
            method="POST",
        )
        body = b'{"image": "' + b64 + b'"}'
        wrong_key = _call(
            f"{gw.url}/v1/services/eos:detect?key={API_KEY}x",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        bad_token = _call(
            f"{gw.url}/v1/services/eos:detect",
            data=body,
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {TOKEN}",
                "traceparent": f"00-{TRACE[::-1]}-00f067aa0ba902b7-01",
            },
            method="POST",
        )
        unknown = _call(
            f"{gw.url}/v1/services/nope:detect",
            data=body,
            headers={"Content-Type": "application/json", "X-API-Key": API_KEY},
            method="POST",
        )
        health = _call(f"{gw.url}/healthz")
        log = gw.log_text()
    finally:
        gw.stop()
    assert ok[0] == 200 and wrong_key[0] == 401 and unknown[0] == 404 and health[0] == 200
    assert bad_token[0] in (401, 503)

    lines = _json_lines(log)
    access = {ln["request_id"]: ln for ln in lines if "httpRequest" in ln}
    for status, headers, _ in (ok, wrong_key, bad_token, unknown, health):
        line = access[headers["X-Request-Id"]]  # one access line per request, by its id
        http = line["httpRequest"]
        assert http["status"] == status
        assert http["requestMethod"] in ("GET", "POST") and http["requestUrl"].startswith("/")
        assert re.fullmatch(r"\d+(\.\d+)?s", http["latency"])  # a Duration
        assert int(http["responseSize"]) > 0
        assert line["severity"] == (
            "INFO" if status < 400 else "WARNING" if status < 500 else "ERROR"
        )
        assert "message" in line and "principal" in line

    first = access[ok[1]["X-Request-Id"]]
    assert first["service"] == "eos" and first["principal"] == "key:logs"
    assert first["detections"] == 2 and int(first["httpRequest"]["requestSize"]) == len(slide)
    assert first["logging.googleapis.com/trace"] == f"projects/eos-project/traces/{TRACE}"
    tp = access[bad_token[1]["X-Request-Id"]]
    assert tp["logging.googleapis.com/trace"] == f"projects/eos-project/traces/{TRACE[::-1]}"
    failed = access[wrong_key[1]["X-Request-Id"]]
    assert failed["error_code"] == "unauthenticated" and failed["principal"] == "anonymous"
    assert failed["error"] == "invalid API key"
    assert access[unknown[1]["X-Request-Id"]]["error_code"] == "unknown_service"
    ids = [ln["request_id"] for ln in lines if "httpRequest" in ln]
    for _, headers, _ in (ok, wrong_key, bad_token, unknown, health):
        assert ids.count(headers["X-Request-Id"]) == 1

    # Never a key, a token (or any part of its signature) or image bytes.
    assert API_KEY not in log and API_KEY[:20] not in log
    assert TOKEN not in log and TOKEN.split(".")[2] not in log and TOKEN.split(".")[1] not in log
    assert b64[:40].decode() not in log and b64[-40:].decode() not in log
    assert "Traceback" not in log


def test_text_form_is_one_readable_line(monkeypatch, capsys) -> None:
    monkeypatch.setenv("LOG_FORMAT", "text")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "p1")
    logs.configure()
    ctx = RequestContext(method="POST", path="/v1/services/eos:detect")
    ctx.route, ctx.service, ctx.principal, ctx.status = "detect", "eos", "key:abc", 200
    ctx.trace, ctx.body_bytes, ctx.response_bytes, ctx.detections = TRACE, 1200, 340, 7
    logs.access(ctx)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and not out.startswith("{")
    assert out.startswith("INFO    POST /v1/services/eos:detect 200 ")
    for part in (
        "1200B->340B",
        "principal=key:abc",
        "detections=7",
        f"request_id={ctx.request_id}",
        f"trace=projects/p1/traces/{TRACE}",
    ):
        assert part in out


def test_json_form_and_the_cloud_warning_without_project(monkeypatch, capsys) -> None:
    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.delenv("GCP_PROJECT", raising=False)
    monkeypatch.setenv("K_SERVICE", "eos-gateway")
    monkeypatch.setattr(logs, "_warned_no_project", False)
    logs.configure()
    for _ in range(2):
        ctx = RequestContext(method="GET", path="/healthz")
        ctx.trace = TRACE
        logs.access(ctx)
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    warnings = [ln for ln in lines if "GOOGLE_CLOUD_PROJECT is not set" in ln["message"]]
    assert len(warnings) == 1 and warnings[0]["severity"] == "WARNING"  # once per process
    access = [ln for ln in lines if "httpRequest" in ln]
    assert len(access) == 2 and access[0]["logging.googleapis.com/trace"] == TRACE


def test_configure_sends_lines_elsewhere_and_filters(capsys) -> None:
    stream = io.StringIO()
    try:
        logs.configure(stream=stream, min_severity="ERROR")
        logs.emit("INFO", "quiet")
        logs.emit("ERROR", "loud", request_id="r1")
    finally:
        logs.configure()
    assert capsys.readouterr().out == ""
    text = stream.getvalue()
    assert "quiet" not in text and "loud" in text and text.count("\n") == 1
