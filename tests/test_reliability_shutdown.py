"""SIGTERM as Cloud Run sends it: requests in flight finish with full answers, new
connections are refused at once, and the process exits within the 10 s grace period."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest
from helpers import synthetic_slide
from loadgen import Outcome, predict_call, send
from procs import start_gateway, start_model_server

PLATFORM_GRACE_S = 10.0
CELLS = 5


@pytest.fixture
def slow_backend(tmp_path):
    control = tmp_path / "control.json"
    control.write_text("{}")
    server = start_model_server(control_file=control)
    yield server, control
    server.stop()


def _gateway(backend_url: str, timeout_s: float):
    config = {"services": {"eos": {"backend": {"url": backend_url, "timeout_s": timeout_s}}}}
    return start_gateway(config, env={"WORKERS": "2", "THREADS": "4"})


def _in_flight(port: int, n: int) -> tuple[list[threading.Thread], list[Outcome]]:
    call = predict_call("slide", "eos", synthetic_slide(960, 720, CELLS, 2, "JPEG"), {200})
    results: list[Outcome] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(send(port, call, timeout_s=60, keep_body=True))
        )
        for _ in range(n)
    ]
    for t in threads:
        t.start()
    return threads, results


def _connect(port: int) -> str:
    """What a new client gets: 'refused', or what the server said."""
    with socket.socket() as s:
        s.settimeout(3)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
            return f"answered {s.recv(64)!r}"
        except ConnectionRefusedError:
            return "refused"
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"


def _wait_exit(proc, timeout: float) -> int | None:
    try:
        return proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(slow_backend):
    backend, control = slow_backend
    gateway = _gateway(backend.url, timeout_s=20)
    try:
        control.write_text(json.dumps({"delay_s": 3.0}))
        threads, results = _in_flight(gateway.port, 6)
        time.sleep(1.0)  # all six are waiting on the model now
        os.kill(gateway.pid, signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.3)
        new_clients = [_connect(gateway.port) for _ in range(3)]
        for t in threads:
            t.join(30)
        code = _wait_exit(gateway, PLATFORM_GRACE_S - (time.monotonic() - signalled))
        assert new_clients == ["refused"] * 3
        assert [(r.status, r.error) for r in results] == [(200, None)] * 6
        assert [r.body["predictions"][0]["num_detections"] for r in results] == [CELLS] * 6
        assert code == 0, f"still running {PLATFORM_GRACE_S} s after SIGTERM (code {code})"
    finally:
        gateway.stop()
    assert "Traceback" not in gateway.log_text()


def test_sigterm_exits_within_the_grace_even_when_a_request_would_outlast_it(slow_backend):
    """A request slower than the grace period is cut, but the process never overstays."""
    backend, control = slow_backend
    gateway = _gateway(backend.url, timeout_s=30)
    try:
        control.write_text(json.dumps({"delay_s": 25.0}))
        threads, _ = _in_flight(gateway.port, 2)
        time.sleep(1.0)
        os.kill(gateway.pid, signal.SIGTERM)
        code = _wait_exit(gateway, PLATFORM_GRACE_S)
        assert code is not None, f"still running {PLATFORM_GRACE_S} s after SIGTERM"
    finally:
        control.write_text("{}")
        gateway.stop()
    for t in threads:
        t.join(10)
