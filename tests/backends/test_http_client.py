"""Model servers that misbehave, against the one HTTP client every protocol uses: answers
trickled past the deadline, answers too long (declared, or an endless chunked stream),
interim answers and redirects.  Each server is a raw socket scripted to misbehave."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
from raw_server import scripted_server

from gateway.backends.http_client import ModelHttpClient
from gateway.config import BackendConfig
from gateway.errors import BackendBadResponse, BackendTimeout

OK_BODY = b'{"predictions": []}'


def _client(port: int, **backend) -> ModelHttpClient:
    config = BackendConfig(url=f"http://127.0.0.1:{port}", model="m", retries=0, **backend)
    return ModelHttpClient("svc", config)


@pytest.fixture
def server():
    stops = []

    def start(script: Callable[[socket.socket], None]) -> tuple[int, list[str]]:
        port, stop, outcomes = scripted_server(script)
        stops.append(stop)
        return port, outcomes

    yield start
    for stop in stops:
        stop.set()


def _trickle(data: bytes, every_s: float) -> Callable[[socket.socket], None]:
    def script(conn: socket.socket) -> None:
        for i in range(len(data)):
            conn.sendall(data[i : i + 1])
            time.sleep(every_s)

    return script


def _wait_for(outcomes: list[str], within_s: float = 10.0) -> list[str]:
    end = time.monotonic() + within_s
    while not outcomes and time.monotonic() < end:
        time.sleep(0.02)
    return outcomes


def _post(client: ModelHttpClient, timeout_s: float = 30.0):
    return client.call("POST", "/v1/models/m:predict", b"{}", time.monotonic() + timeout_s)


@pytest.mark.parametrize("where", ["head", "body"])
def test_an_answer_trickled_past_the_deadline_is_a_504_and_its_socket_closed(server, where):
    body = b" " * 400 + OK_BODY
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    if where == "head":
        script = _trickle(head + body, 0.05)  # 20 s at this pace; every read is in time
    else:

        def script(conn: socket.socket) -> None:
            conn.sendall(head)
            _trickle(body, 0.05)(conn)

    port, outcomes = server(script)
    client = _client(port, timeout_s=1.0)
    with pytest.raises(BackendTimeout):
        _post(client, timeout_s=1.0)
    # The gateway closed the socket: the server's next writes fail, long before its end.
    assert _wait_for(outcomes) == ["closed"]


def test_an_answer_declared_longer_than_max_answer_mb_is_a_502_unread(server):
    def script(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 50000000\r\n\r\n")
        for _ in range(50000):
            conn.sendall(b"x" * 1000)

    port, outcomes = server(script)
    with pytest.raises(BackendBadResponse, match="max_answer_mb") as caught:
        _post(_client(port, max_answer_mb=1.0))
    assert caught.value.status == 502
    assert _wait_for(outcomes) == ["closed"]


@pytest.mark.parametrize("chunk", [1000, 65536])
def test_an_endless_chunked_answer_is_cut_by_the_byte_cap(server, chunk):
    def script(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = f"{chunk:x}\r\n".encode() + b"1" * chunk + b"\r\n"
        while True:
            conn.sendall(piece)

    port, outcomes = server(script)
    with pytest.raises(BackendBadResponse, match="max_answer_mb"):
        _post(_client(port, max_answer_mb=0.5))
    assert _wait_for(outcomes) == ["closed"]


def test_an_answer_within_the_cap_is_read_whole(server):
    body = b'{"predictions": [' + b" " * 900_000 + b"]}"

    def script(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    port, _ = server(script)
    resp = _post(_client(port, max_answer_mb=1.0))
    assert resp.status == 200 and resp.data == body


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 19"
        b'\r\n\r\n{"predictions": []}',
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    ],
)
def test_interim_answers_and_redirects_are_a_502_never_followed(server, reply):
    requests_seen = []

    def script(conn: socket.socket) -> None:
        requests_seen.append(1)
        conn.sendall(reply)

    port, _ = server(script)
    client = _client(port)
    with pytest.raises(BackendBadResponse, match="not an answer") as caught:
        _post(client)
    assert caught.value.status == 502
    assert caught.value.code == "backend_bad_response"
    assert len(requests_seen) == 1  # nothing followed, nothing retried
    if reply.startswith(b"HTTP/1.1 1"):  # the real answer follows in the socket: not reused
        assert client.pool._idle == []
