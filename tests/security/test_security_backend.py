"""What the model server says stays in the logs: callers get the gateway's words, and the
unauthenticated health routes show state only."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from helpers import b64, synthetic_slide
from procs import start_gateway
from raw_server import raw_server

# Every test here runs the gateway (or the CLI) as its own process.
pytestmark = pytest.mark.process

SECRET = "SECRET-internal-path /models/eos/1/saved_model.pb tensor input_1:0"


def _reply(status: int, reason: str) -> bytes:
    body = json.dumps({"error": SECRET}).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def fetch(url: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"} if body else {}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize(
    "status,reason,expect",
    [(500, "Internal Server Error", 502), (400, "Bad Request", 502), (404, "Not Found", 503)],
)
def test_model_server_errors_are_answered_in_the_gateways_words(status, reason, expect):
    port, stop = raw_server(_reply(status, reason))
    gateway = start_gateway(
        {"services": {"eos": {"backend": {"url": f"http://127.0.0.1:{port}", "timeout_s": 5}}}}
    )
    try:
        image = b64(synthetic_slide(320, 240, 2, 1, "PNG"))
        body = json.dumps({"instances": [{"b64": image}]}).encode()
        got, answer = fetch(f"{gateway.url}/v1/models/eos:predict", body)
        readyz = fetch(f"{gateway.url}/readyz")
        model = fetch(f"{gateway.url}/v1/models/eos")
        log = gateway.log_text()
    finally:
        gateway.stop()
        stop.set()
    assert got == expect, answer[:300]
    assert readyz[0] == 503 and model[0] == 503
    for text in (answer, readyz[1], model[1]):
        assert b"SECRET" not in text and b"saved_model" not in text, text[:300]
    assert json.loads(readyz[1])["services"]["eos"]["detail"] == "not ready"
    # The whole text is in the log, with the request it failed.
    logged = [json.loads(x) for x in log.splitlines() if "SECRET" in x]
    assert any(x.get("message") == "model server error" and x.get("request_id") for x in logged)
    assert any(SECRET in x.get("backend_error", "") for x in logged)
