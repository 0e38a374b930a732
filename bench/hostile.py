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
* CPU per request (``python -m bench.hostile images``): the costliest images the limits
  let through (a 40 MP progressive JPEG of ``limits.max_jpeg_scans`` scans, each an AC
  refinement of the luma at 4:4:4; ``limits.max_image_segments`` empty segments or
  chunks) and the same one past each limit, beside a plain 40 MP JPEG; the CPU the
  gateway's processes spent on each request (user + system, from /proc), its status and
  its time.  A rendered answer's memory: RSS growth for one 33 MP slide rendered.
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

from bench.common import (
    RssSampler,
    idle_rss_bytes,
    jpeg,
    many_blocks_gif,
    many_chunks_png,
    many_scans_jpeg,
    many_segments_jpeg,
    png,
    predict_body,
    start_gateway,
    start_stub,
)

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


def _cpu_s(arbiter: int) -> float:
    """User + system CPU of the gateway's processes (the arbiter and its live workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(entry) == arbiter or int(fields[1]) == arbiter:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def _post_detect(port: int, image: bytes, accept: str = "application/json") -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request(
            "POST",
            "/v1/services/eos:detect",
            image,
            {"Content-Type": "application/octet-stream", "Accept": accept},
        )
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def hostile_images() -> list[tuple[str, bytes]]:
    """The costliest images within the limits, and each one past them."""
    w, h = 7300, 5470  # 39.9 MP, under limits.max_pixels
    rng = __import__("numpy").random.default_rng(0)
    noise = rng.integers(0, 256, (h // 10, w // 10, 3), dtype="uint8")
    plain = jpeg(Image.fromarray(noise).resize((w, h)), quality=90)
    return [
        ("plain 40 MP baseline JPEG (reference)", plain),
        ("40 MP progressive JPEG, 32 scans (the limit)", many_scans_jpeg(w, h, 32)),
        (
            "40 MP progressive JPEG of the reference's pixels, 32 scans (the limit)",
            many_scans_jpeg(w, h, 32, Image.fromarray(noise).resize((w, h)), repeat=6),
        ),
        ("40 MP progressive JPEG, 2,000 scans (refused)", many_scans_jpeg(w, h, 2000)),
        ("JPEG with 10,000 empty COM segments (the limit)", many_segments_jpeg(9990)),
        ("JPEG with 6,000,000 empty COM segments (refused)", many_segments_jpeg(6_000_000)),
        ("PNG with 10,000 empty tEXt chunks (the limit)", many_chunks_png(9990)),
        ("PNG with 2,000,000 empty IDAT chunks (refused)", many_chunks_png(2_000_000, b"IDAT")),
        ("GIF with 4,000 comment blocks (within the limit)", many_blocks_gif(4000)),
        ("GIF with 4,000,000 comment blocks (refused)", many_blocks_gif(4_000_000)),
    ]


def cpu_per_request() -> None:
    stub = start_stub(0.05)
    config = {
        "services": {"eos": {"backend": {"url": stub.url, "timeout_s": 30}}},
        "usage": {"enabled": False},
    }
    gateway = start_gateway(config, env={"WORKERS": "1"})
    try:
        _post_detect(gateway.port, jpeg(Image.new("RGB", (640, 480), (200, 180, 210))))
        for name, image in hostile_images():
            before, t0 = _cpu_s(gateway.pid), time.perf_counter()
            status, body = _post_detect(gateway.port, image)
            wall = time.perf_counter() - t0
            cpu = _cpu_s(gateway.pid) - before
            code = "" if status == 200 else " " + body.decode(errors="replace")[:60]
            print(
                f"{name}: {len(image) / MB:.1f} MB, {status}{code}; "
                f"CPU {cpu:.2f} s, answered in {wall:.2f} s"
            )
    finally:
        gateway.stop()
        stub.stop()


def render_memory() -> None:
    """RSS growth of one 33 MP slide answered drawn (``Accept: image/jpeg``)."""
    stub = start_stub(0.05)
    config = {"services": {"eos": {"backend": {"url": stub.url, "timeout_s": 120}}}}
    gateway = start_gateway(config, env={"WORKERS": "1"})
    try:
        rng = __import__("numpy").random.default_rng(1)
        small = rng.integers(0, 256, (500, 660, 3), dtype="uint8")
        slide = jpeg(Image.fromarray(small).resize((6600, 5000)), quality=90)
        _post_detect(gateway.port, jpeg(Image.new("RGB", (640, 480))), "image/jpeg")  # warm
        for n in (1, 4):
            idle = idle_rss_bytes(gateway.popen.pid)
            with RssSampler(gateway.popen.pid, 0.05) as sampler:
                statuses = at_once(n, lambda: _post_detect(gateway.port, slide, "image/jpeg")[0])
            print(
                f"{n} x 33 MP rendered at once: statuses {sorted(statuses)}, idle "
                f"{idle / MB:.0f} MB, peak {sampler.peak / MB:.0f} MB, "
                f"growth {(sampler.peak - idle) / MB:.0f} MB"
            )
    finally:
        gateway.stop()
        stub.stop()


def main() -> None:
    import sys

    print(
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    if sys.argv[1:] == ["images"]:
        cpu_per_request()
        render_memory()
        return
    memory()
    connections()
    cpu_per_request()
    render_memory()


if __name__ == "__main__":
    main()
