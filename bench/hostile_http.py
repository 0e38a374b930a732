"""Figures for RELIABILITY.md's security section, round two: the request line, bodies
without a usable length, connections that close, model servers that misbehave.

    .venv/bin/python -m bench.hostile_http

Each figure is measured on a gateway under functions-framework (one worker, four
threads) and printed with the limit that holds it:

* a request line of 8 kB, 1 MB and 16 MB: the status, the time to the answer, the
  worker's CPU, and the longest log line;
* eight chunked heads without a chunk and eight 32 MB bodies that never come: the time
  until the last declared one is answered, and ``/healthz``'s slowest answer meanwhile;
* ``requests.Session`` sending refused bodies of 0 B to 40 MB, each followed by a valid
  request: connection errors seen;
* model servers that trickle their answer (a byte every 0.1 s), answer 44 MB, an endless
  chunked stream, 5,000 detections for a tile, or a redirect: the status, the time to
  the answer against ``timeout_s`` (2 s), and the growth of the gateway's memory.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import socket
import threading
import time
from pathlib import Path

import psutil
import requests

from bench.common import RssSampler, idle_rss_bytes, scripted_server, sha, start_gateway

MB = 1024 * 1024
KEY = "sk-bench-http"
ENV = {"WORKERS": "1", "THREADS": "4"}
SLIDE = Path(__file__).resolve().parents[1] / "samples" / "slide.jpg"


def _worker(gateway) -> psutil.Process:
    return psutil.Process(gateway.popen.pid).children()[0]


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _raw(port: int, data: bytes, timeout: float = 120.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except OSError:
            pass
    return out


def _status(raw: bytes) -> str:
    return raw.split(b" ", 2)[1].decode() if raw.startswith(b"HTTP/") else "none"


def request_lines() -> list[dict]:
    gateway = start_gateway({"demo": False}, env=ENV)
    rows = []
    try:
        worker = _worker(gateway)
        for size in (8 * 1024, MB, 16 * MB):
            before, started = _cpu_s(worker), time.perf_counter()
            raw = _raw(gateway.port, f"GET /{'a' * size} HTTP/1.1\r\nHost: g\r\n\r\n".encode())
            took = time.perf_counter() - started
            time.sleep(0.3)
            rows.append(
                {
                    "request line": f"{size // 1024} kB",
                    "status": _status(raw),
                    "answer_s": round(took, 3),
                    "worker_cpu_s": round(_cpu_s(worker) - before, 3),
                }
            )
        rows.append(
            {"longest log line (bytes)": max(len(x) for x in gateway.log_text().splitlines())}
        )
    finally:
        gateway.stop()
    return rows


def bodies_without_data() -> dict:
    config = {"demo": False, "auth": {"api_keys": [{"id": "b", "sha256": sha(KEY)}]}}
    gateway = start_gateway(config, env=ENV)
    held = []
    try:
        started = time.perf_counter()
        for i in range(16):
            s = socket.create_connection(("127.0.0.1", gateway.port), timeout=600)
            framing = "Transfer-Encoding: chunked" if i < 8 else f"Content-Length: {32 * MB}"
            s.sendall(
                f"POST /v1/models/eos:predict HTTP/1.1\r\nHost: g\r\nX-API-Key: {KEY}\r\n"
                f"Content-Type: application/json\r\n{framing}\r\n\r\n".encode()
            )
            held.append(s)
        slowest = 0.0
        answered_at: list[float] = []

        def wait(s: socket.socket) -> None:
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
            answered_at.append(time.perf_counter() - started)

        waiters = [threading.Thread(target=wait, args=(s,)) for s in held[8:]]
        for t in waiters:
            t.start()
        while any(t.is_alive() for t in waiters):
            t0 = time.perf_counter()
            requests.get(f"http://127.0.0.1:{gateway.port}/healthz", timeout=600)
            slowest = max(slowest, time.perf_counter() - t0)
            time.sleep(0.2)
        return {
            "last 32 MB body without data answered after_s": round(max(answered_at), 2),
            "healthz slowest_s": round(slowest, 3),
        }
    finally:
        for s in held:
            s.close()
        gateway.stop()


def keep_alive_session() -> dict:
    config = {"demo": False, "auth": {"api_keys": [{"id": "b", "sha256": sha(KEY)}]}}
    gateway = start_gateway(config, env=ENV)
    errors = answered = 0
    try:
        url = f"http://127.0.0.1:{gateway.port}/v1/services/eos:detect"
        with requests.Session() as session:
            for _ in range(3):
                for size in (0, 1000, 300_000, 2 * MB, 6 * MB, 20 * MB, 40 * MB):
                    for headers in ({}, {"X-API-Key": KEY}):
                        body = b"\xff" * size if not headers else SLIDE.read_bytes()
                        try:
                            session.post(url, data=body, headers=headers, timeout=120)
                            answered += 1
                        except requests.ConnectionError:
                            errors += 1
    finally:
        gateway.stop()
    return {"requests answered": answered, "connection errors": errors}


# Two million detections for one tile, 44 MB: made once, sent as fast as the socket takes.
HUGE_BODY = (
    b'{"predictions": [{"detection_boxes": [' + b"[0.1,0.1,0.2,0.2]," * 2_000_000 + b"[0,0,0,0]]}]}"
)


def _answer_script(kind: str):
    def trickle(conn: socket.socket) -> None:
        body = b'{"predictions": [' + b" " * 2000 + b"]}"
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for i in range(len(body)):
            conn.sendall(body[i : i + 1])
            time.sleep(0.1)

    def huge(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(HUGE_BODY))
        conn.sendall(HUGE_BODY)

    def endless(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"10000\r\n" + b" " * 65536 + b"\r\n"
        while True:
            conn.sendall(piece)

    def many(conn: socket.socket) -> None:
        k = 5000
        pred = {
            "detection_boxes": [[0.1, 0.1, 0.2, 0.2]] * k,
            "detection_scores": [0.5] * k,
            "detection_classes": [1] * k,
            "num_detections": k,
        }
        body = json.dumps({"predictions": [pred]}).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    def redirect(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://10.0.0.1/\r\n\r\n")

    return {
        "trickle": trickle,
        "44 MB": huge,
        "endless chunked": endless,
        "5000 detections": many,
        "redirect": redirect,
    }[kind]


def model_servers() -> list[dict]:
    rows = []
    for kind in ("trickle", "44 MB", "endless chunked", "5000 detections", "redirect"):
        port, stop, _ = scripted_server(_answer_script(kind))
        config = {
            "demo": False,
            "services": {
                "eos": {
                    "backend": {
                        "url": f"http://127.0.0.1:{port}",
                        "model": "eos",
                        "timeout_s": 2,
                        "retries": 0,
                    },
                }
            },
        }
        gateway = start_gateway(config, env=ENV)
        try:
            idle = idle_rss_bytes(gateway.popen.pid)
            with RssSampler(gateway.popen.pid) as sampler:
                started = time.perf_counter()
                resp = requests.post(
                    f"http://127.0.0.1:{gateway.port}/v1/services/eos:detect",
                    data=SLIDE.read_bytes(),
                    headers={"Content-Type": "image/jpeg"},
                    timeout=600,
                )
                took = time.perf_counter() - started
                time.sleep(0.5)
            rows.append(
                {
                    "model server": kind,
                    "status": resp.status_code,
                    "code": resp.json().get("code"),
                    "answer_s": round(took, 2),
                    "rss_growth_mb": round((sampler.peak - idle) / MB),
                }
            )
        finally:
            gateway.stop()
            stop.set()
    return rows


def main() -> None:
    print(
        f"# {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{psutil.cpu_count()} cores, Python {platform.python_version()}"
    )
    for row in request_lines():
        print(row)
    print(bodies_without_data())
    print(keep_alive_session())
    for row in model_servers():
        print(row)


if __name__ == "__main__":
    main()
