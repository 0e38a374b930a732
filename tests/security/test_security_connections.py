"""Connections that hold on: idle ones, half-sent heads and bodies trickled a byte at a
time must not stop the gateway from serving; a reload (SIGHUP) or one worker's exit must
not stop the others.  Everything over real sockets against functions-framework's gunicorn."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import pytest
from helpers import sha
from procs import child_pids, start_gateway

# Every test here runs the gateway (or the CLI) as its own process.
pytestmark = pytest.mark.process

IDLE = 40  # connections that send nothing
HALF_HEADS = 30  # connections that send part of a head and stop
SLOW_BODIES = 20  # connections that declare a body and send three bytes of it
ANSWER_WITHIN_S = 10.0  # generous: a starved server answered nothing for 90 s


def healthz(port: int, timeout: float = ANSWER_WITHIN_S) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    return out


def closed_by_server(s: socket.socket, within_s: float) -> bool:
    """Whether the server closes (or answers and closes) within ``within_s``."""
    s.settimeout(within_s)
    try:
        while s.recv(4096):
            pass
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


@pytest.fixture
def short_deadlines():
    return {
        "WORKERS": "1",
        "THREADS": "4",
        "GATEWAY_HEADER_TIMEOUT_S": "3",
        "GATEWAY_BODY_GRACE_S": "2",
        "GATEWAY_BODY_MIN_RATE": "65536",
    }


def test_idle_and_half_sent_connections_do_not_starve_the_worker(short_deadlines):
    gateway = start_gateway(env=short_deadlines)
    held: list[socket.socket] = []
    try:
        for _ in range(IDLE):
            held.append(socket.create_connection(("127.0.0.1", gateway.port)))
        for _ in range(HALF_HEADS):
            s = socket.create_connection(("127.0.0.1", gateway.port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
            held.append(s)
        for _ in range(SLOW_BODIES):
            s = socket.create_connection(("127.0.0.1", gateway.port))
            s.sendall(
                b"POST /v1/models/eos:predict HTTP/1.1\r\nHost: gateway\r\n"
                b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"i'
            )
            held.append(s)
        # Four threads, ninety connections holding on: requests are still answered.
        for _ in range(5):
            assert healthz(gateway.port).startswith(b"HTTP/1.1 200"), gateway.log_text()[-2000:]
        # Every one of them is closed once its head's or body's deadline has passed.
        assert all(closed_by_server(s, 15) for s in held)
        assert healthz(gateway.port).startswith(b"HTTP/1.1 200")
    finally:
        for s in held:
            s.close()
        gateway.stop()


def test_large_body_trickled_gets_a_408_and_frees_its_thread(short_deadlines):
    """A body too large for the event loop is read by a thread once its first bytes came
    (the loop's read-ahead), under the minimum rate."""
    env = dict(short_deadlines, THREADS="1", GATEWAY_BODY_MIN_RATE="1048576")
    gateway = start_gateway(env=env)
    length = 5 * 1024 * 1024  # above what the loop gathers: a thread reads it
    try:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=60) as s:
            s.sendall(
                b"POST /v1/models/eos:predict HTTP/1.1\r\nHost: gateway\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {length}\r\n\r\n".encode()
                + b'{"instances": ['
                + b" " * 300_000  # past the loop's read-ahead
            )
            t0 = time.monotonic()
            answer = b""
            while time.monotonic() - t0 < 200:
                try:
                    s.sendall(b" ")  # one byte a second: far below the minimum rate
                except OSError:
                    break
                s.settimeout(1.0)
                try:
                    part = s.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not part:
                    break
                answer += part
                if answer.rstrip().endswith(b"}"):  # the whole JSON answer is in
                    break
        assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
        assert b'"request_timeout"' in answer
        assert b"\r\nConnection: close\r\n" in answer  # the connection closes: it says so
        # The only thread is free again.
        assert healthz(gateway.port).startswith(b"HTTP/1.1 200")
    finally:
        gateway.stop()


# -- reload and worker exits --------------------------------------------------------------------


def _key(secret: str) -> dict:
    return {"id": secret, "sha256": sha(secret)}


def _status(port: int, key: str) -> int | str:
    """The status of a model-status call with an API key, or what went wrong."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                f"POST /v1/services/nope:detect HTTP/1.1\r\nHost: gateway\r\nX-API-Key: {key}\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            head = s.recv(64)
        return int(head.split()[1]) if head else "closed"
    except OSError as exc:
        return type(exc).__name__



class Hammer:
    """Requests back to back on new connections; every answer that is not HTTP is kept."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.failures: list[str] = []
        self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if healthz(self.port, timeout=10).startswith(b"HTTP/1.1 200"):
                    self.answered += 1
                else:
                    self.failures.append("not a 200")
            except OSError as exc:
                self.failures.append(type(exc).__name__)
            time.sleep(0.01)

    def __enter__(self) -> Hammer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_sighup_rereads_the_configuration_without_refusing_connections(tmp_path):
    config = {"auth": {"api_keys": [_key("old-key")]}}
    gateway = start_gateway(config, env={"WORKERS": "2", "THREADS": "4"}, workdir=tmp_path)
    try:
        assert _status(gateway.port, "old-key") == 404  # admitted: unknown service
        assert _status(gateway.port, "new-key") == 401
        (tmp_path / "gateway-config.json").write_text(
            json.dumps({"auth": {"api_keys": [_key("new-key")]}})
        )
        with Hammer(gateway.port) as hammer:
            time.sleep(0.5)
            os.kill(gateway.pid, signal.SIGHUP)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _status(gateway.port, "old-key") != 401:
                time.sleep(0.2)
            time.sleep(1.0)
        assert _status(gateway.port, "old-key") == 401  # revoked without a restart
        assert _status(gateway.port, "new-key") == 404
        assert hammer.failures == [], hammer.failures[:5]
        assert hammer.answered > 10
    finally:
        gateway.stop()


def test_one_workers_exit_does_not_stop_the_others():
    gateway = start_gateway(env={"WORKERS": "2", "THREADS": "4"})
    try:
        deadline = time.monotonic() + 20
        while len(workers := sorted(child_pids(gateway.pid))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # the second worker may still be starting
        assert len(workers) == 2
        with Hammer(gateway.port) as hammer:
            time.sleep(0.5)
            os.kill(workers[0], signal.SIGTERM)
            time.sleep(3.0)
        assert hammer.failures == [], hammer.failures[:5]
        assert healthz(gateway.port).startswith(b"HTTP/1.1 200")
    finally:
        gateway.stop()
