"""SIGTERM as Cloud Run sends it: new connections are refused while the requests in flight
are still being worked on, those finish with full answers, and the process exits on its
own, even while a request would outlast the platform's grace period.

The model server holds the requests until the test lets them go, and each step waits for
its condition (requests at the model, the listener closed, the process gone) with a
generous bound instead of sleeping for a guessed time.  How long the exit takes is the
gateway's own grace (``gateway.serving.GRACEFUL_TIMEOUT_S``, under the platform's 10 s),
not something a test on a busy machine can time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

from helpers import WAIT_S, synthetic_slide, wait_until
from loadgen import Outcome, predict_call, send
from process_guard import process_fixture
from procs import start_gateway, start_model_server

from gateway.serving import GRACEFUL_TIMEOUT_S

PLATFORM_GRACE_S = 10.0
CELLS = 2
SLIDE = synthetic_slide(480, 360, CELLS, 2, "JPEG")  # one tile: little work once let go


@process_fixture
def slow_backend(tmp_path):
    control = tmp_path / "control.json"
    control.write_text("{}")
    server = start_model_server(control_file=control)
    yield server, control, tmp_path / "arrivals.txt"
    server.stop()


def _gateway(backend_url: str, timeout_s: float):
    config = {"services": {"eos": {"backend": {"url": backend_url, "timeout_s": timeout_s}}}}
    # Six requests are held at the model at once: a worker may accept all of them.
    return start_gateway(config, env={"WORKERS": "2", "THREADS": "8"})


def _arrivals(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def _in_flight(port: int, n: int, arrivals: Path) -> tuple[list[threading.Thread], list[Outcome]]:
    """``n`` requests, returned once every one of them is waiting on the model."""
    call = predict_call("slide", "eos", SLIDE, {200})
    before = _arrivals(arrivals)
    results: list[Outcome] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(send(port, call, timeout_s=WAIT_S, keep_body=True))
        )
        for _ in range(n)
    ]
    for t in threads:
        t.start()
    wait_until(lambda: _arrivals(arrivals) >= before + n, f"{n} requests at the model")
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


def _wait_exit(proc) -> int | None:
    try:
        return proc.popen.wait(WAIT_S)
    except subprocess.TimeoutExpired:
        return None


def test_the_gateway_grace_fits_the_platform_grace():
    assert GRACEFUL_TIMEOUT_S < PLATFORM_GRACE_S


def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(slow_backend):
    backend, control, arrivals = slow_backend
    # The deadline must not end the held requests however long the six take to reach the
    # model on a busy machine: only SIGTERM starts the clock that matters here.
    gateway = _gateway(backend.url, timeout_s=WAIT_S)
    try:
        control.write_text(json.dumps({"arrivals_file": str(arrivals)}))
        for _ in range(2):  # warm: the requests below do not wait on a worker's start-up
            assert send(gateway.port, predict_call("warm", "eos", SLIDE, {200})).status == 200
        assert _arrivals(arrivals) == 2  # one tile, one model request per slide
        control.write_text(json.dumps({"hold": True, "arrivals_file": str(arrivals)}))
        threads, results = _in_flight(gateway.port, 6, arrivals)
        os.kill(gateway.pid, signal.SIGTERM)
        wait_until(lambda: _connect(gateway.port) == "refused", "the listener closed")
        new_clients = [_connect(gateway.port) for _ in range(3)]
        assert results == []  # refused while all six are still in flight
        control.write_text("{}")  # let them go
        for t in threads:
            t.join(WAIT_S)
        code = _wait_exit(gateway)
        assert new_clients == ["refused"] * 3
        assert [(r.status, r.error) for r in results] == [(200, None)] * 6
        scores = [r.body["predictions"][0]["detection_scores"] for r in results]
        assert [sum(x >= 0.3 for x in s) for s in scores] == [CELLS] * 6
        assert code == 0, f"exit code {code} after SIGTERM"
    finally:
        gateway.stop()
    assert "Traceback" not in gateway.log_text()


def test_sigterm_exit_does_not_wait_for_a_request_that_would_outlast_the_grace(slow_backend):
    """A request the model never answers is cut: the process exits on its own while the
    request is still unanswered, instead of waiting for it."""
    backend, control, arrivals = slow_backend
    gateway = _gateway(backend.url, timeout_s=900)
    try:
        control.write_text(json.dumps({"hold": True, "arrivals_file": str(arrivals)}))
        threads, results = _in_flight(gateway.port, 2, arrivals)
        os.kill(gateway.pid, signal.SIGTERM)
        code = _wait_exit(gateway)
        assert code is not None, f"still running {WAIT_S} s after SIGTERM"
        for t in threads:
            t.join(WAIT_S)
        assert [r.status for r in results] == [None, None]  # cut, never answered
    finally:
        control.write_text("{}")
        gateway.stop()
