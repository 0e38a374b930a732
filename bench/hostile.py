"""Figures for RELIABILITY.md's security section: memory under decompression bombs and
service under connections that hold on.

    .venv/bin/python -m bench.hostile

* Memory: a flat 33 MP PNG (a few kB that decode into 6600 x 5000 pixels), sent once and
  then four at once to a gateway on the TF Serving stub; the gateway's RSS (master and
  worker) is sampled, and the growth over its idle RSS is printed against the targets
  (one <= 260 MB, four <= 600 MB).
* Connections: dozens of idle, half-sent-head and trickled-body connections held open
  while ``/healthz`` is called; its latency is printed as a ratio to the same call on the
  quiet gateway in the same run.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import statistics
import threading
import time

from PIL import Image

from bench.common import RssSampler, idle_rss_bytes, png, predict_body, start_gateway, start_stub

MB = 1024 * 1024
ONE_TARGET_MB, FOUR_TARGET_MB = 260, 600


def flat_png(width: int = 6600, height: int = 5000) -> bytes:
    return png(Image.new("RGB", (width, height), (236, 226, 240)), optimize=True)


def post(port: int, body: bytes) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", "/v1/models/eos:predict", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def at_once(n: int, call) -> list[int]:
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(call())) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def memory() -> None:
    stub = start_stub(0.05)
    config = {"services": {"eos": {"backend": {"url": stub.url, "timeout_s": 120}}}}
    gateway = start_gateway(config, env={"WORKERS": "1"})
    try:
        image = flat_png()
        body = predict_body(image)
        print(f"flat PNG: {len(image) / 1024:.0f} kB, 6600x5000 = 33 MP")
        post(gateway.port, predict_body(flat_png(320, 240)))  # warm: imports, backend
        for n, target in ((1, ONE_TARGET_MB), (4, FOUR_TARGET_MB)):
            idle = idle_rss_bytes(gateway.popen.pid)
            with RssSampler(gateway.popen.pid, 0.05) as sampler:
                statuses = at_once(n, lambda: post(gateway.port, body))
            grew = (sampler.peak - idle) / MB
            verdict = "met" if grew <= target else "NOT met"
            print(
                f"{n} at once: statuses {sorted(statuses)}, idle {idle / MB:.0f} MB, "
                f"peak {sampler.peak / MB:.0f} MB, growth {grew:.0f} MB "
                f"(target <= {target} MB: {verdict})"
            )
    finally:
        gateway.stop()
        stub.stop()


def _healthz_ms(port: int) -> float:
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n")
        while s.recv(4096):
            pass
    return (time.perf_counter() - t0) * 1000


def connections(counts=(25, 100, 400)) -> None:
    gateway = start_gateway(env={"WORKERS": "1"})
    try:
        quiet = statistics.median(_healthz_ms(gateway.port) for _ in range(20))
        print(f"/healthz on a quiet gateway: {quiet:.1f} ms (median of 20)")
        for n in counts:
            held = []
            try:
                for i in range(n):
                    s = socket.create_connection(("127.0.0.1", gateway.port))
                    if i % 3 == 1:
                        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: g\r\nX-Slow: ")
                    elif i % 3 == 2:
                        s.sendall(
                            b"POST /v1/models/eos:predict HTTP/1.1\r\nHost: g\r\n"
                            b"Content-Length: 100000\r\n\r\n{"
                        )
                    held.append(s)
                times = [_healthz_ms(gateway.port) for _ in range(20)]
            finally:
                for s in held:
                    s.close()
            med = statistics.median(times)
            print(
                f"{n} held connections (idle / half a head / trickled body): /healthz "
                f"median {med:.1f} ms, max {max(times):.1f} ms, {med / quiet:.2f}x quiet"
            )
            time.sleep(1)
    finally:
        gateway.stop()


def main() -> None:
    print(
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    memory()
    connections()


if __name__ == "__main__":
    main()
