"""Hostile requests against a running gateway, as they come over a socket: every answer is
the gateway's JSON error with CORS headers, nothing is read that a refusal does not need,
and the log says who called, one line a request."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import pytest
from helpers import sha
from loadgen import group_rss_bytes
from process_guard import process_fixture
from procs import start_gateway

# Every test here runs the gateway (or the CLI) as its own process.
pytestmark = pytest.mark.process

ORIGIN = "https://app.example"
KEY = "sk-test-security"
KEY_SHA = sha(KEY)
CONFIG = {
    "cors": {"origins": [ORIGIN]},
    "demo": False,
    "trusted_proxies": 1,
    "auth": {
        "api_keys": [{"id": "lab", "sha256": KEY_SHA}],
        "firebase": {"project_id": "my-project"},
        "certs_urls": {"firebase": "http://127.0.0.1:9/certs"},  # never reached here
    },
}


@process_fixture(scope="module")
def gateway():
    proc = start_gateway(CONFIG, env={"WORKERS": "1", "THREADS": "4"})
    yield proc
    proc.stop()


def exchange(port: int, data: bytes, timeout: float = 20.0) -> bytes:
    """Send raw bytes, read until the server closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
                if _complete(out):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    return out


def _complete(raw: bytes) -> bool:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def gateway_error(raw: bytes, status: int, code: str, cors: str = ORIGIN) -> dict:
    """The answer is the gateway's JSON error, with CORS headers for the page's origin."""
    got, headers, body = parse(raw)
    assert got == status, raw[:300]
    assert headers["content-type"] == "application/json", headers
    doc = json.loads(body)
    assert doc["code"] == code and doc["request_id"] == headers["x-request-id"], doc
    assert headers.get("access-control-allow-origin") in (cors, "*"), headers
    return doc


def request(method: str, path: str, headers: dict[str, str] | None = None, body=b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: gateway", f"Origin: {ORIGIN}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def access_lines(gateway, marker: str) -> list[dict]:
    time.sleep(0.3)
    out = []
    for line in gateway.log_text().splitlines():
        if marker in line and line.startswith("{"):
            out.append(json.loads(line))
    return out


# -- answers that used to be HTML or a 500 ---------------------------------------------------


def test_oversized_headers_are_a_json_431(gateway):
    raw = exchange(gateway.port, request("GET", "/healthz", {"X-Filler": "a" * 40_000}))
    gateway_error(raw, 431, "headers_too_large")


def test_unparsable_request_line_is_a_json_400(gateway):
    raw = exchange(gateway.port, b"GARBAGE\r\n\r\n")
    gateway_error(raw, 400, "bad_request")


def test_framework_404_has_cors_headers(gateway):
    raw = exchange(gateway.port, request("GET", "/robots.txt"))
    gateway_error(raw, 404, "not_found")


def test_static_route_does_not_serve_the_demo_page(gateway):
    for path in ("/static/demo.html", "/"):
        raw = exchange(gateway.port, request("GET", path))
        gateway_error(raw, 404, "not_found")
        assert b"<html" not in raw.lower()
    assert access_lines(gateway, '"/static/demo.html 404"') or access_lines(
        gateway, "GET /static/demo.html 404"
    )


def test_token_with_deeply_nested_header_is_a_401(gateway):
    header = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).rstrip(b"=").decode()
    token = f"{header[:7000]}.eyJhIjoxfQ.c2ln"
    raw = exchange(
        gateway.port,
        request("POST", "/v1/services/eos:detect", {"Authorization": f"Bearer {token}"}, b"{}"),
    )
    gateway_error(raw, 401, "unauthenticated")


def _multipart(parts: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    boundary = "gatewayboundary"
    body = b""
    for name, value in parts:
        body += (
            (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n').encode()
            + value
            + b"\r\n"
        )
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize(
    "parts",
    [
        [(f"f{i}", b"x") for i in range(1200)],  # more than werkzeug's 1,000 parts
        [("threshold", b"0" * 600_000)],  # a text field over its 500 kB
    ],
    ids=["too-many-parts", "text-field-too-large"],
)
def test_multipart_limits_are_a_json_413(gateway, parts):
    content_type, body = _multipart(parts)
    headers = {"X-API-Key": KEY, "Content-Type": content_type}
    raw = exchange(gateway.port, request("POST", "/v1/services/eos:detect", headers, body))
    gateway_error(raw, 413, "payload_too_large")


def test_malformed_multipart_is_not_a_500(gateway):
    headers = {"X-API-Key": KEY, "Content-Type": "multipart/form-data; boundary=zz"}
    raw = exchange(gateway.port, request("POST", "/v1/services/eos:detect", headers, b"--zz\r\n"))
    status, _, _ = parse(raw)
    assert 400 <= status < 500, raw[:300]


# -- a refusal reads nothing more ------------------------------------------------------------


def test_refused_body_is_not_read_into_memory(gateway):
    """200 MB without credentials: the 401 comes at once, the connection closes, and the
    worker's memory does not grow by the body."""
    before = group_rss_bytes(gateway.popen.pid)
    peak = [before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], group_rss_bytes(gateway.popen.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    total = 200 * 1024 * 1024
    sent = 0
    answer = b""
    head = (
        "POST /v1/models/eos:predict HTTP/1.1\r\nHost: gateway\r\n"
        f"Content-Type: application/json\r\nContent-Length: {total}\r\n\r\n"
    ).encode()
    chunk = b"A" * (1024 * 1024)
    try:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as s:
            s.sendall(head)
            try:
                while sent < total:
                    s.sendall(chunk)
                    sent += len(chunk)
            except OSError:  # reset or broken pipe: the gateway stopped reading
                pass
            try:
                while part := s.recv(65536):
                    answer += part
            except OSError:
                pass
    finally:
        stop.set()
        sampler.join()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert sent < total, "the gateway read the whole body of a refused request"
    growth = peak[0] - before
    assert growth < 64 * 1024 * 1024, f"worker grew by {growth / 2**20:.0f} MB"


def test_a_refused_body_says_the_connection_closes(gateway):
    """A 401 answered before its 300 kB body was read says ``Connection: close`` before
    the connection closes, so a keep-alive client (Google's client libraries resend a
    request at once after a 401) opens a new connection instead of failing on this one."""
    body = json.dumps({"instances": [{"content": "A" * 300_000}]}).encode()
    head = (
        "POST /v1/projects/p/locations/l/endpoints/eos:predict HTTP/1.1\r\nHost: gateway\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as s:
        s.sendall(head + body)
        answer = b""
        while part := s.recv(65536):
            answer += part
    status, headers, _ = parse(answer)
    assert status == 401 and headers["connection"] == "close", answer[:300]


# -- logs --------------------------------------------------------------------------------------


def test_forwarded_for_first_entry_is_not_the_callers_address(gateway):
    marker = "/v1/services/xff-check"
    exchange(
        gateway.port,
        request("GET", marker, {"X-Forwarded-For": "6.6.6.6, 203.0.113.77"}),
    )
    lines = [x for x in access_lines(gateway, marker) if x.get("httpRequest")]
    assert lines, gateway.log_text()[-2000:]
    assert lines[-1]["httpRequest"]["remoteIp"] == "203.0.113.0"


def test_text_log_is_one_line_per_request():
    proc = start_gateway(env={"LOG_FORMAT": "text"})
    try:
        exchange(proc.port, request("GET", "/evil%0AINFO%20forged%20line"))
        exchange(proc.port, request("GET", "/healthz", {"User-Agent": "a\x0bb"}))
        time.sleep(0.3)
        text = proc.log_text()
    finally:
        proc.stop()
    assert not any(line.startswith("INFO forged") for line in text.splitlines()), text
    assert any("/evil\\nINFO forged line 404" in line for line in text.splitlines()), text


def test_demo_page_when_on_is_served_with_its_security_headers():
    proc = start_gateway({"demo": True})
    try:
        page = parse(exchange(proc.port, request("GET", "/")))
        static = parse(exchange(proc.port, request("GET", "/static/demo.html")))
    finally:
        proc.stop()
    status, headers, _ = page
    assert status == 200
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert static[0] == 404  # only through its route, never as a bare static file
