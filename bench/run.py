"""The gateway's benchmark harness: one command, figures as ratios against side-by-side references.

    .venv/bin/python -m bench [--quick] [--only overhead,...] [--hide-libturbojpeg system|all]

It starts what it needs on loopback: the gateway under ``functions-framework`` (gunicorn
inside) as deployed, stub model servers speaking TF Serving's REST API, the Open
Inference Protocol and Vertex AI's (bench/stub_backend.py) with a set latency, and bare
``functions-framework`` functions (bench/bare_function.py) as references.  On a shared
machine absolute times drift, so every figure is a ratio against a reference
measured in the same run, interleaved with it, repeated, and summarised by the median.
It prints a table and writes ``bench/results/gateway-<UTC time>.json``.

``--hide-libturbojpeg system`` runs every gateway where the system's ``libturbojpeg.so.0``
cannot be loaded (a private mount namespace covers it, ``tests/hidden_libs.py``; root
only), as on a machine or a Cloud Functions build without Debian's ``libturbojpeg0``: the
gateway then cuts with the library of the ``turbojpeg`` wheel.  ``all`` hides that one
too, so the gateway decodes and re-encodes.  The table's first line names the image path
the gateway reported on ``/readyz``.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import http.client
import io
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import (
    DATA,
    ROOT,
    decode_once,
    free_port,
    jpeg,
    library_files,
    median,
    png,
    predict_body,
    save_results,
    service_account_file,
    sha,
    slide_bytes,
    start_bare,
    start_stub,
    without_files,
)
from bench.common import start_gateway as start_plain_gateway

SLOW_MS = 200.0
GOALS = {
    "overhead": 1.2,  # gateway's own cost / one Pillow decode, 1920x1440 JPEG
    "fanout": 1.15,  # (latency at L - latency at 0) / L
    "throughput": 0.8,  # slides/s at concurrency 8 / (2 / CPU s per slide)
    "cold_start": 2.0,  # first :predict answer / bare hello-world's first answer
    "cold_detect": 2.0,  # first :detect answer, API key, embedded detector / hello-world
    "memory": 3.0,  # peak RSS above idle / body size
    "merge_ms": 20.0,  # 5,000 raw detections from 9 tiles
    "protocol": 1.10,  # another protocol's service's own cost / TF Serving's, same slide
}

# The services of the protocols row: (label, service, backend keys besides url and the
# common ones; None for the reference, TF Serving's "eos").
PROTOCOL_SERVICES: tuple[tuple[str, str, dict | None], ...] = (
    ("tfserving", "eos", None),
    ("v2 binary", "v2-binary", {"protocol": "v2", "bytes": "binary", "model": "eos"}),
    ("v2 base64", "v2-base64", {"protocol": "v2", "bytes": "base64", "model": "eos"}),
    (
        "vertex",
        "vertex",
        {"protocol": "vertex", "project": "bench", "location": "us-central1", "endpoint": "1"},
    ),
)


SYSTEM_TURBOJPEG = "libturbojpeg.so.0"
_hidden_files: list[str] = []  # covered in each gateway's mount namespace (--hide-libturbojpeg)


def turbojpeg_files(which: str) -> list[str]:
    """The libturbojpeg files to hide: the system's, or the wheel's as well (``all``)."""
    from gateway.pipeline import jpegcut

    files = library_files(SYSTEM_TURBOJPEG)
    if which == "all":
        files += [path for name, path in jpegcut.candidates() if path != SYSTEM_TURBOJPEG]
    return files


def start_gateway(config: dict, port: int | None = None, start: bool = True):
    """The gateway as ``tests/procs.py`` starts it, without the system libturbojpeg if asked."""
    proc = start_plain_gateway(config, port=port, start=False)
    proc.argv = without_files(proc.argv, _hidden_files)
    return proc.start() if start else proc


def image_path(port: int) -> str:
    """What the gateway says it does with JPEG slides (``/readyz`` ``image_path``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/readyz")
        return json.loads(conn.getresponse().read()).get("image_path", "not reported")
    finally:
        conn.close()


# --- HTTP ---------------------------------------------------------------------------------


def post(port: int, path: str, body: bytes, timeout: float = 60.0) -> tuple[int, bytes, float]:
    """One POST on a fresh connection: (status, body, seconds)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data, time.perf_counter() - t0
    finally:
        conn.close()


def predict(port: int, body: bytes, service: str = "eos") -> float:
    status, data, seconds = post(port, f"/v1/models/{service}:predict", body)
    if status != 200:
        raise RuntimeError(f"gateway answered {status}: {data[:300]!r}")
    return seconds


def bare(port: int, body: bytes) -> float:
    status, data, seconds = post(port, "/", body)
    if status != 200:
        raise RuntimeError(f"bare function answered {status}: {data[:300]!r}")
    return seconds


# --- /proc --------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def group_pids(pgid: int) -> list[int]:
    """The processes of a process group (each server runs in its own session)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:  # field 5 (pgrp), counted after the command name
            out.append(int(entry))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / _TICK


def status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(pids: list[int]) -> float:
    return sum(status_kb(p, "VmRSS") for p in pids) / 1024.0


# --- helpers ------------------------------------------------------------------------------


def interleaved(fns: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each function once per round, in a new random order every round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    rng = random.Random(1)
    for _ in range(rounds):
        order = list(fns)
        rng.shuffle(order)
        for k in order:
            times[k].append(fns[k]())
    return times


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return run


def small_jpeg() -> bytes:
    rng = np.random.default_rng(0)
    return jpeg(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), quality=90)


def gateway_config(fast_url: str, slow_url: str, key_file: Path | None = None) -> dict:
    """TF Serving services on the stubs; with a ``key_file`` (a service-account key whose
    token_uri is the 0 ms stub's) also the protocols row's other services, on that stub (it
    answers every protocol)."""
    backend = {"max_parallel": 16, "timeout_s": 30}
    services = {
        "eos": {"backend": {"url": fast_url, "model": "eos", **backend}},
        "slow": {"backend": {"url": slow_url, "model": "eos", **backend}},
    }
    for _, name, keys in PROTOCOL_SERVICES if key_file is not None else ():
        if keys is not None:
            services[name] = {"backend": {"url": fast_url, **keys, **backend}}
            if keys["protocol"] == "vertex":
                services[name]["backend"]["credentials_file"] = str(key_file)
    return {"services": services}


# --- measurements -------------------------------------------------------------------------


def slides() -> list[tuple[str, bytes]]:
    return [
        ("real-slide-1920x1440.jpg", slide_bytes(DATA / "real-slide-1920x1440.jpg")),
        ("real-slide-large.jpg", slide_bytes(DATA / "real-slide-large.jpg")),
        ("real-slide-1920x1440.png", slide_bytes(DATA / "real-slide-1920x1440.jpg", png=True)),
    ]


def measure_overhead(gw_port: int, bare_port: int, rounds: int) -> list[dict]:
    rows = []
    for name, data in slides():
        body = predict_body(data)
        predict(gw_port, body)  # warm: backend pool, lazily loaded modules
        bare(bare_port, body)
        t = interleaved(
            {
                "gateway": lambda b=body: predict(gw_port, b),
                "bare": lambda b=body: bare(bare_port, b),
                "decode": timed(lambda d=data: decode_once(d)),
            },
            rounds,
        )
        gw, tr, dec = median(t["gateway"]), median(t["bare"]), median(t["decode"])
        own = gw - tr  # the stub answers at once: its own time is part of the gateway's
        rows.append(
            {
                "slide": name,
                "body_bytes": len(body),
                "gateway_ms": gw * 1e3,
                "transport_ms": tr * 1e3,
                "overhead_ms": own * 1e3,
                "decode_ms": dec * 1e3,
                "ratio": own / dec,
                "rounds": rounds,
            }
        )
    return rows


def measure_protocols(gw_port: int, bare_port: int, rounds: int) -> list[dict]:
    """The 1920x1440 JPEG through each outbound protocol, the stub answering at once.

    The same ``:predict`` body goes to one service per protocol of one gateway; each
    one's own cost (latency minus the bare function's transport) is set against the TF
    Serving service's, all measured interleaved with the transport and Pillow's decode.
    """
    name, data = slides()[0]
    body = predict_body(data)
    answers = {}
    for label, service, _ in PROTOCOL_SERVICES:
        predict(gw_port, body, service)  # warm: backend client, the served version, modules
        status, answer, _ = post(gw_port, f"/v1/models/{service}:predict", body)
        answers[label] = json.loads(answer)["predictions"] if status == 200 else status
    if any(a != answers["tfserving"] for a in answers.values()):
        raise RuntimeError("the protocols' services answered different detections")
    bare(bare_port, body)
    fns: dict[str, Callable[[], float]] = {
        label: lambda s=service: predict(gw_port, body, s)
        for label, service, _ in PROTOCOL_SERVICES
    }
    fns["bare"] = lambda: bare(bare_port, body)
    fns["decode"] = timed(lambda: decode_once(data))
    t = interleaved(fns, rounds)
    tr, dec = median(t["bare"]), median(t["decode"])
    reference = median(t[PROTOCOL_SERVICES[0][0]]) - tr
    rows = []
    for label, service, keys in PROTOCOL_SERVICES:
        gw = median(t[label])
        own = gw - tr
        rows.append(
            {
                "protocol": label,
                "service": service,
                "bytes": (keys or {}).get("bytes"),
                "slide": name,
                "gateway_ms": gw * 1e3,
                "transport_ms": tr * 1e3,
                "own_ms": own * 1e3,
                "decode_ms": dec * 1e3,
                "ratio_to_decode": own / dec,
                "reference_own_ms": reference * 1e3,
                "ratio": own / reference,
                "rounds": rounds,
            }
        )
    return rows


def measure_fanout(gw_port: int, rounds: int) -> list[dict]:
    rows = []
    for name, data in slides()[:2]:
        body = predict_body(data)
        predict(gw_port, body, "slow")
        t = interleaved(
            {
                "slow": lambda b=body: predict(gw_port, b, "slow"),
                "fast": lambda b=body: predict(gw_port, b, "eos"),
            },
            rounds,
        )
        slow, fast = median(t["slow"]), median(t["fast"])
        rows.append(
            {
                "slide": name,
                "latency_ms": slow * 1e3,
                "latency_at_zero_ms": fast * 1e3,
                "backend_ms": SLOW_MS,
                "ratio": (slow - fast) * 1e3 / SLOW_MS,
                "rounds": rounds,
            }
        )
    return rows


def measure_throughput(gw, stub, n_seq: int, n_conc: int, concurrency: int = 8) -> dict:
    """Slides/s at ``concurrency`` against 2 / (CPU s one slide costs on this machine).

    A slide's CPU cost is what the gateway's processes and the stub backend spend on it,
    served one at a time; both run on the same two cores during the concurrent run.
    """
    name, data = slides()[0]
    body = predict_body(data)
    pids = group_pids(gw.pid) + group_pids(stub.pid)
    for _ in range(3):
        predict(gw.port, body)
    c0, t0 = cpu_seconds(pids), time.perf_counter()
    for _ in range(n_seq):
        predict(gw.port, body)
    seq_wall = time.perf_counter() - t0
    cpu_per_slide = (cpu_seconds(pids) - c0) / n_seq
    c0, t0 = cpu_seconds(pids), time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: predict(gw.port, body), range(n_conc)))
    wall = time.perf_counter() - t0
    conc_cpu = (cpu_seconds(pids) - c0) / n_conc
    rate = n_conc / wall
    ideal = (os.cpu_count() or 2) / cpu_per_slide
    return {
        "slide": name,
        "concurrency": concurrency,
        "slides": n_conc,
        "slides_per_s": rate,
        "cpu_s_per_slide": cpu_per_slide,
        "cpu_s_per_slide_concurrent": conc_cpu,
        "sequential_slides_per_s": n_seq / seq_wall,
        "ideal_slides_per_s": ideal,
        "ratio": rate / ideal,
    }


def _first_answer(argv_proc, probe: Callable[[int], bool], timeout: float = 60.0) -> float:
    """Seconds from spawning the process to the first successful ``probe``."""
    proc = argv_proc
    t0 = time.perf_counter()
    popen = subprocess.Popen(
        proc.argv,
        cwd=proc.cwd,
        env=proc.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while time.perf_counter() - t0 < timeout:
            if popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {popen.returncode}")
            try:
                if probe(proc.port):
                    return time.perf_counter() - t0
            except OSError:
                pass
            time.sleep(0.005)
        raise TimeoutError(f"{proc.name} gave no answer within {timeout} s")
    finally:
        os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(5)


def hello_ok(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200
    finally:
        conn.close()


def compile_bytecode() -> None:
    """Write the gateway's and the references' bytecode, as a deployed function has it.

    With PYTHONDONTWRITEBYTECODE set (as on this machine) every spawned gateway would
    otherwise compile each module edited since its last ``.pyc`` from source (~10 ms),
    while the libraries on both sides load from bytecode.
    """
    for path in (ROOT / "gateway", ROOT / "main.py", ROOT / "bench" / "bare_function.py"):
        if path.is_dir():
            compileall.compile_dir(str(path), quiet=1)
        else:
            compileall.compile_file(str(path), quiet=1)


def measure_cold_start(stub_url: str, rounds: int) -> dict:
    compile_bytecode()
    body = predict_body(small_jpeg())

    def gateway_ok(port: int) -> bool:
        status, _, _ = post(port, "/v1/models/eos:predict", body, timeout=30)
        return status == 200

    return against_hello(gateway_config(stub_url, stub_url), gateway_ok, rounds)


def against_hello(config: dict, gateway_ok: Callable[[int], bool], rounds: int) -> dict:
    """Spawn to the first ``gateway_ok`` answer, against the hello-world's first answer."""

    def gateway_once() -> float:
        proc = start_gateway(config, port=free_port(), start=False)
        return _first_answer(proc, gateway_ok)

    def hello_once() -> float:
        proc = start_bare("hello", port=free_port(), start=False)
        return _first_answer(proc, hello_ok)

    t = interleaved({"gateway": gateway_once, "hello": hello_once}, rounds)
    gw, hello = median(t["gateway"]), median(t["hello"])
    return {
        "gateway_ms": gw * 1e3,
        "hello_ms": hello * 1e3,
        "ratio": gw / hello,
        "rounds": rounds,
        "gateway_all_ms": [round(x * 1e3, 1) for x in t["gateway"]],
        "hello_all_ms": [round(x * 1e3, 1) for x in t["hello"]],
    }


BENCH_KEY = "bench-key-not-a-secret"


def measure_cold_detect(rounds: int) -> dict:
    """Spawn to the first 200 from ``:detect`` with auth on (an API key), embedded detector."""
    compile_bytecode()
    image = small_jpeg()
    digest = sha(BENCH_KEY)
    config = {"auth": {"api_keys": [{"id": "bench", "sha256": digest}]}}

    def detect_ok(port: int) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            headers = {"Content-Type": "image/jpeg", "X-API-Key": BENCH_KEY}
            conn.request("POST", "/v1/services/eos:detect", body=image, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status not in (200, 503):  # 503: not started; anything else is a fault
                raise RuntimeError(f"gateway answered {resp.status} to :detect")
            return resp.status == 200
        finally:
            conn.close()

    return against_hello(config, detect_ok, rounds)


def big_image(kind: str, target_bytes: int) -> bytes:
    """Noise (incompressible) as JPEG or PNG of about ``target_bytes``."""
    rng = np.random.default_rng(7)
    per_px = 3.0 if kind == "PNG" else 2.6  # measured bytes per pixel of noise
    side = int((target_bytes / per_px) ** 0.5) // 16 * 16
    for _ in range(4):
        noise = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
        if kind == "PNG":
            data = png(noise, compress_level=1)
        else:
            data = jpeg(noise, quality=95, subsampling=0)
        if abs(len(data) - target_bytes) < 0.05 * target_bytes:
            break
        side = int(side * (target_bytes / len(data)) ** 0.5) // 16 * 16
    return data


def measure_memory(config: dict, body_mb: float = 30.0) -> list[dict]:
    """Peak RSS growth of a fresh gateway (warmed by one small slide) serving one big body."""
    rows = []
    image_bytes = int(body_mb * 1e6 * 3 / 4) - 200
    for kind in ("JPEG", "PNG"):
        data = big_image(kind, image_bytes)
        body = predict_body(data)
        gw = start_gateway(config)
        try:
            rows.append(_memory_once(gw, kind, data, body))
        finally:
            gw.stop()
    return rows


def _memory_once(gw, kind: str, data: bytes, body: bytes) -> dict:
    predict(gw.port, predict_body(small_jpeg()))
    pids = group_pids(gw.pid)
    for pid in pids:  # reset each process's peak RSS (VmHWM) to its current RSS
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            pass
    idle = rss_mb(pids)
    idle_each = {p: status_kb(p, "VmRSS") for p in pids}
    peak = [idle]
    done = threading.Event()

    def sample(pids=pids, peak=peak, done=done) -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(pids))
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        seconds = predict(gw.port, body)
    finally:
        done.set()
        sampler.join()
    hwm_growth = max((status_kb(p, "VmHWM") - idle_each.get(p, 0)) / 1024.0 for p in pids)
    growth = max(peak[0] - idle, hwm_growth)
    size_mb = len(body) / 2**20
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
    return {
        "image": f"{kind} noise {w}x{h}",
        "body_mb": size_mb,
        "idle_rss_mb": idle,
        "peak_growth_mb": growth,
        "sampled_growth_mb": peak[0] - idle,
        "hwm_growth_mb": hwm_growth,
        "seconds": seconds,
        "ratio": growth / size_mb,
    }


def measure_merge(rounds: int) -> dict:
    from bench.merge_data import nine_tiles
    from gateway.pipeline.merge import merge

    tiles, per_tile, w, h = nine_tiles(5000)
    merge(tiles, per_tile, w, h)
    times = [timed(lambda: merge(tiles, per_tile, w, h))() for _ in range(rounds)]
    ms = median(times) * 1e3
    return {
        "detections": int(sum(len(d.scores) for d in per_tile)),
        "tiles": len(tiles),
        "merged": len(merge(tiles, per_tile, w, h)),
        "median_ms": ms,
    }


# --- report -------------------------------------------------------------------------------


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gb": round(ram_gb, 1)}


def verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "NOT met"


def table(result: dict) -> str:
    lines = [
        f"gateway: {result.get('environment', '')}; image path: {result.get('image_path', '-')}",
        "",
        "| measure | figure | reference | ratio | goal | |",
        "|---|---|---|---|---|---|",
    ]
    for r in result.get("overhead", []):
        goal = r["slide"] == "real-slide-1920x1440.jpg"
        lines.append(
            f"| overhead, {r['slide']} | {r['overhead_ms']:.1f} ms (gateway "
            f"{r['gateway_ms']:.1f} - transport {r['transport_ms']:.1f}) | "
            f"Pillow decode {r['decode_ms']:.1f} ms | {r['ratio']:.2f}x | "
            f"{'<= 1.2x' if goal else '-'} | "
            f"{verdict(r['ratio'], GOALS['overhead']) if goal else ''} |"
        )
    for r in result.get("protocols", []):
        reference = r["protocol"] == PROTOCOL_SERVICES[0][0]
        lines.append(
            f"| protocol {r['protocol']}, {r['slide']} | {r['own_ms']:.1f} ms (gateway "
            f"{r['gateway_ms']:.1f} - transport {r['transport_ms']:.1f}); "
            f"{r['ratio_to_decode']:.2f}x decode {r['decode_ms']:.1f} ms | "
            + (
                "the reference | - | - | |"
                if reference
                else f"tfserving {r['reference_own_ms']:.1f} ms | {r['ratio']:.2f}x | "
                f"<= {GOALS['protocol']:.2f}x | {verdict(r['ratio'], GOALS['protocol'])} |"
            )
        )
    for r in result.get("fanout", []):
        lines.append(
            f"| fan-out, {r['slide']} | {r['latency_ms']:.0f} ms at L=200 | "
            f"{r['latency_at_zero_ms']:.0f} ms at L=0 | {r['ratio']:.2f} x L | <= 1.15 x L | "
            f"{verdict(r['ratio'], 1.15)} |"
        )
    t = result.get("throughput")
    if t:
        lines.append(
            f"| throughput, concurrency {t['concurrency']} | {t['slides_per_s']:.1f} slides/s | "
            f"2 / {t['cpu_s_per_slide'] * 1e3:.0f} ms CPU = {t['ideal_slides_per_s']:.1f} "
            f"slides/s | {t['ratio']:.2f} | >= 0.8 | "
            f"{'met' if t['ratio'] >= 0.8 else 'NOT met'} |"
        )
    c = result.get("cold_start")
    if c:
        lines.append(
            f"| cold start to first :predict | {c['gateway_ms']:.0f} ms | hello-world "
            f"{c['hello_ms']:.0f} ms | {c['ratio']:.2f}x | <= 2.0x | {verdict(c['ratio'], 2.0)} |"
        )
    c = result.get("cold_detect")
    if c:
        lines.append(
            f"| cold start to first :detect (API key, embedded detector) | {c['gateway_ms']:.0f} "
            f"ms | hello-world {c['hello_ms']:.0f} ms | {c['ratio']:.2f}x | <= 2.0x | "
            f"{verdict(c['ratio'], GOALS['cold_detect'])} |"
        )
    for r in result.get("memory", []):
        lines.append(
            f"| peak RSS, {r['body_mb']:.1f} MB body ({r['image']}) | +{r['peak_growth_mb']:.0f} "
            f"MB | idle {r['idle_rss_mb']:.0f} MB | {r['ratio']:.2f}x body | < 3x | "
            f"{'met' if r['ratio'] < 3.0 else 'NOT met'} |"
        )
    m = result.get("merge")
    if m:
        lines.append(
            f"| merge, {m['detections']:,} detections / {m['tiles']} tiles | "
            f"{m['median_ms']:.1f} ms | - | - | <= 20 ms | {verdict(m['median_ms'], 20.0)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="gateway benchmarks")
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    ap.add_argument(
        "--only",
        default="overhead,protocols,fanout,throughput,cold_start,cold_detect,memory,merge",
        help="comma-separated subset",
    )
    ap.add_argument(
        "--hide-libturbojpeg",
        choices=["none", "system", "all"],
        default="none",
        help="libturbojpeg the gateways cannot load: the system's, or the wheel's too (root)",
    )
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    rounds = 5 if args.quick else 15
    _hidden_files[:] = (
        [] if args.hide_libturbojpeg == "none" else turbojpeg_files(args.hide_libturbojpeg)
    )
    result: dict = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "command": "python -m bench " + " ".join(argv if argv is not None else []),
        "goals": GOALS,
        "environment": {
            "none": f"system {SYSTEM_TURBOJPEG} visible if installed",
            "system": f"system {SYSTEM_TURBOJPEG} hidden (private mount namespace)",
            "all": "system and wheel libturbojpeg hidden (private mount namespace)",
        }[args.hide_libturbojpeg],
        "hidden_files": list(_hidden_files),
    }
    started = time.perf_counter()
    procs = []
    key_dir = None
    try:
        if only & {"overhead", "protocols", "fanout", "throughput", "memory", "cold_start"}:
            fast = start_stub(0.0)
            slow = start_stub(SLOW_MS / 1000.0)
            procs += [fast, slow]
        if only & {"overhead", "protocols", "fanout", "throughput", "memory"}:
            key_file = None
            if "protocols" in only:
                key_dir = tempfile.mkdtemp(prefix="eos-bench-")
                key_file = service_account_file(Path(key_dir) / "sa.json", fast.url + "/token")
            gw = start_gateway(gateway_config(fast.url, slow.url, key_file))
            procs.append(gw)
            result["image_path"] = image_path(gw.port)
        if only & {"overhead", "protocols"}:
            bare_fn = start_bare("read_body")
            procs.append(bare_fn)
        if "overhead" in only:
            result["overhead"] = measure_overhead(gw.port, bare_fn.port, rounds)
        if "protocols" in only:
            result["protocols"] = measure_protocols(gw.port, bare_fn.port, rounds * 2)
        if "fanout" in only:
            result["fanout"] = measure_fanout(gw.port, max(rounds // 2, 3))
        if "throughput" in only:
            n = 12 if args.quick else 40
            result["throughput"] = measure_throughput(gw, fast, n // 2, n)
        if "memory" in only:
            result["memory"] = measure_memory(gateway_config(fast.url, slow.url))
        if "cold_start" in only:
            result["cold_start"] = measure_cold_start(fast.url, 3 if args.quick else 7)
        if "cold_detect" in only:
            result["cold_detect"] = measure_cold_detect(3 if args.quick else 7)
            if "image_path" not in result:
                probe = start_gateway({})
                procs.append(probe)
                result["image_path"] = image_path(probe.port)
        if "merge" in only:
            result["merge"] = measure_merge(rounds * 2)
    finally:
        for p in reversed(procs):
            p.stop()
        if key_dir is not None:
            shutil.rmtree(key_dir, ignore_errors=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    text = table(result)
    print(text)
    detector = ROOT / "docs" / "detector.md"
    if detector.exists():
        result["detector_doc"] = str(detector.relative_to(ROOT))
    out = save_results("gateway", result)
    print(f"\n{result['seconds']} s; results in {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
