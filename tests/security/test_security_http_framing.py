"""The request line, bodies without a usable length and the connection's end, over real
sockets against functions-framework's gunicorn: a long request line is a JSON 414 and
nothing echoed is long; chunked bodies are gathered or held to a minimum rate, malformed
ones are a JSON 400, unknown codings and expectations a JSON 501 and 417; an answer after
which the connection closes says so, and a keep-alive client never sees a connection
error."""

from __future__ import annotations

import base64
import json
import socket
import time
from pathlib import Path

import pytest
import requests
from helpers import sha
from process_guard import process_fixture
from procs import start_gateway

pytestmark = pytest.mark.process

KEY = "sk-framing"
CONFIG = {
    "demo": False,
    "auth": {"api_keys": [{"id": "lab", "sha256": sha(KEY)}]},
}
SLIDE = Path(__file__).resolve().parents[2] / "samples" / "slide.jpg"
THREADS = 4


@process_fixture(scope="module")
def gateway():
    proc = start_gateway(
        CONFIG,
        env={
            "WORKERS": "1",
            "THREADS": str(THREADS),
            "GATEWAY_HEADER_TIMEOUT_S": "3",
            "GATEWAY_BODY_GRACE_S": "2",
            # Deadlines of a few seconds for bodies the loop holds (2 s + 4 MiB at 1 MB/s).
            "GATEWAY_BODY_MIN_RATE": str(1024 * 1024),
        },
    )
    yield proc
    proc.stop()


def exchange(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    """Send ``data``, read until the server closes; what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
    return out


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def json_error(raw: bytes, status: int, code: str) -> dict:
    got, headers, body = parse(raw)
    assert got == status, raw[:400]
    assert headers["content-type"] == "application/json", headers
    doc = json.loads(body[: int(headers["content-length"])])
    assert doc["code"] == code, doc
    return {**doc, "headers": headers}


def chunked_head(path: str = "/v1/services/eos:detect", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: gateway\r\nX-API-Key: {KEY}\r\n"
        f"Content-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n{extra}\r\n"
    ).encode()


def chunked(data: bytes, size: int = 65536) -> bytes:
    out = b"".join(
        f"{len(data[i : i + size]):x}\r\n".encode() + data[i : i + size] + b"\r\n"
        for i in range(0, len(data), size)
    )
    return out + b"0\r\n\r\n"


def healthz(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
        return int(s.recv(64).split()[1])


# -- item: the request line and what is echoed ------------------------------------------------


def test_a_long_request_line_is_a_json_414_and_logs_stay_short(gateway):
    marker = "longline"
    raw = exchange(
        gateway.port, f"GET /{marker}{'a' * 200_000} HTTP/1.1\r\nHost: gateway\r\n\r\n".encode()
    )
    doc = json_error(raw, 414, "uri_too_long")
    assert doc["headers"]["connection"] == "close"
    # Under the limit: answered, and neither the answer nor a log line holds the whole path.
    raw = exchange(
        gateway.port,
        f"GET /{marker}{'b' * 8000} HTTP/1.1\r\nHost: gateway\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    doc = json_error(raw, 404, "not_found")
    assert len(doc["error"]) < 400, doc["error"]
    time.sleep(0.3)
    lines = [line for line in gateway.log_text().splitlines() if marker in line]
    assert lines, "no log line names the request"
    assert max(len(line) for line in lines) < 4096, max(len(line) for line in lines)


def test_a_long_service_name_is_not_echoed_whole(gateway):
    name = "s" * 6000
    raw = exchange(
        gateway.port,
        (
            f"POST /v1/services/{name}:detect HTTP/1.1\r\nHost: gateway\r\nX-API-Key: {KEY}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n"
        ).encode(),
    )
    status, _, body = parse(raw)
    doc = json.loads(body)
    assert status == 404 and doc["code"] in ("unknown_service", "not_found"), doc
    assert len(doc["error"]) < 400, doc["error"]


# -- item: bodies without a usable length -----------------------------------------------------


PADDING = 5 * 1024 * 1024  # more than the event loop gathers: a thread reads the rest


def predict_json(padding: int = 0) -> bytes:
    b64 = base64.b64encode(SLIDE.read_bytes()).decode()
    return (
        json.dumps({"instances": [{"image_bytes": {"b64": b64}, "key": "k"}]})[:-1]
        + " " * padding
        + "}"
    ).encode()


@pytest.mark.parametrize("where", ["loop", "expect", "thread"])
def test_a_chunked_body_is_served(gateway, where):
    """Small enough to be gathered by the event loop (after an ``Expect: 100-continue``
    too, whose interim answer comes first), or too large, read by a thread."""
    extra = "Expect: 100-continue\r\n" if where == "expect" else ""
    path = "/v1/models/eos:predict"
    body = predict_json(PADDING if where == "thread" else 0)
    raw = exchange(
        gateway.port,
        chunked_head(path, extra=extra + "Connection: close\r\n") + chunked(body),
    )
    if where == "expect":
        assert raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), raw[:100]
        raw = raw.split(b"\r\n\r\n", 1)[1]
    status, _, answer = parse(raw)
    assert status == 200, raw[:400]
    assert json.loads(answer)["predictions"][0]["num_detections"] > 0


MALFORMED = {
    "bad size": b"zz\r\nabc\r\n0\r\n\r\n",
    "size overflow": b"fffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    "missing CRLF": b"3\r\nabcXY0\r\n\r\n",
    "content-length trailer": b"3\r\nabc\r\n0\r\nContent-Length: 3\r\n\r\n",
    "negative size": b"-3\r\nabc\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("where", ["loop", "expect", "thread"])
@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_chunked_body_is_a_json_400(gateway, name, where):
    extra = "Expect: 100-continue\r\n" if where == "expect" else ""
    first = chunked(b" " * PADDING)[: -len(b"0\r\n\r\n")] if where == "thread" else b""
    head = chunked_head("/v1/models/eos:predict", extra=extra)
    raw = exchange(gateway.port, head + first + MALFORMED[name])
    if raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"):
        raw = raw.split(b"\r\n\r\n", 1)[1]
    doc = json_error(raw, 400, "bad_request")
    assert doc["headers"]["connection"] == "close"
    assert "Traceback" not in gateway.log_text()


def test_a_body_that_ends_before_its_length_is_a_json_400(gateway):
    head = (
        f"POST /v1/models/eos:predict HTTP/1.1\r\nHost: gateway\r\nX-API-Key: {KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 9000000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as s:
        # More than the event loop reads ahead: a thread reads the rest and finds it short.
        s.sendall(head + b'{"instances": [' + b" " * 400_000)
        s.shutdown(socket.SHUT_WR)  # the client is done: 8,999,000 bytes short
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    doc = json_error(raw, 400, "bad_request")
    assert doc["headers"]["connection"] == "close"


@pytest.mark.parametrize(
    "header, status, code",
    [
        ("Transfer-Encoding: gzip, chunked", 501, "unsupported_transfer_coding"),
        ("Transfer-Encoding: x-custom", 501, "unsupported_transfer_coding"),
        ("Expect: 200-ok", 417, "expectation_failed"),
    ],
)
def test_unknown_codings_and_expectations_are_json_errors(gateway, header, status, code):
    raw = exchange(
        gateway.port,
        (
            f"POST /v1/services/eos:detect HTTP/1.1\r\nHost: gateway\r\nX-API-Key: {KEY}\r\n"
            f"{header}\r\nContent-Length: 3\r\n\r\nabc"
            if header.startswith("Expect")
            else f"POST /v1/services/eos:detect HTTP/1.1\r\nHost: gateway\r\n{header}\r\n\r\n"
            "3\r\nabc\r\n0\r\n\r\n"
        ).encode(),
    )
    doc = json_error(raw, status, code)
    assert doc["headers"]["connection"] == "close"


def test_bodies_without_data_hold_no_thread(gateway):
    """More chunked heads without a chunk than the worker's total for gathered bodies would
    take if it counted 4 MiB for each (20, for 64 MiB), and 32 MB declared bodies that
    never come, twice as many as the worker has threads: /healthz is answered, and every
    one is closed by the event loop once its deadline passes, with no answer (a thread
    would have answered 408): none took a thread."""
    held = []
    try:
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", gateway.port), timeout=60)
            s.sendall(chunked_head())
            held.append(s)
        for _ in range(2 * THREADS):
            s = socket.create_connection(("127.0.0.1", gateway.port), timeout=60)
            s.sendall(
                (
                    f"POST /v1/services/eos:detect HTTP/1.1\r\nHost: gateway\r\n"
                    f"X-API-Key: {KEY}\r\nContent-Length: {32 * 1024 * 1024}\r\n\r\n"
                ).encode()
            )
            held.append(s)
        assert healthz(gateway.port) == 200
        for s in held:
            raw = b""
            while chunk := s.recv(65536):
                raw += chunk
            assert raw == b"", raw[:200]
        assert healthz(gateway.port) == 200
    finally:
        for s in held:
            s.close()


# -- item: honest connections -----------------------------------------------------------------


def test_a_keep_alive_client_never_sees_a_connection_error(gateway):
    """requests.Session: refused requests with bodies of several sizes (401: no key; 413:
    over the body limit), each followed by valid ones, all on one session."""
    valid_body = SLIDE.read_bytes()
    with requests.Session() as session:
        url = f"http://127.0.0.1:{gateway.port}"
        for size in (0, 1, 10_000, 300_000, 2_000_000, 6_000_000, 20_000_000, 40_000_000):
            refused = session.post(
                f"{url}/v1/services/eos:detect",
                data=b"\xff" * size,
                headers={"Content-Type": "image/jpeg"},
                timeout=60,
            )
            assert refused.status_code in (401, 413), (size, refused.text[:200])
            assert refused.json()["code"] in ("unauthenticated", "payload_too_large")
            if size > 0 and refused.status_code == 401:
                assert refused.headers["Connection"] == "close", size
            assert session.get(f"{url}/healthz", timeout=30).status_code == 200
            ok = session.post(
                f"{url}/v1/services/eos:detect",
                data=valid_body,
                headers={"Content-Type": "image/jpeg", "X-API-Key": KEY},
                timeout=60,
            )
            assert ok.status_code == 200, (size, ok.text[:200])
