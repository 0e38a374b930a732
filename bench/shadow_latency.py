"""What a shadow costs the caller: ``:predict`` answered with no shadow, with a shadow as
fast as the primary, and with one slower than ``shadow.max_wait_ms`` (which is cut).

The goal: a shadowed answer takes at most the primary's time plus ``max_wait_ms``, and a
shadow as fast as the primary adds little.  Figures are medians of back-to-back requests
against stub model servers (bench/stub_backend.py) on loopback; printed as met or not,
never asserted (a busy machine measures the machine).

    .venv/bin/python -m bench.shadow_latency [--requests 30] [--max-wait-ms 400]
"""

from __future__ import annotations

import argparse
import time
import urllib.request

from bench.common import (
    ROOT,
    median,
    predict_body,
    save_results,
    slide_bytes,
    start_gateway,
    start_stub,
)

PRIMARY_S = 0.1


def _timed(url: str, body: bytes, n: int) -> list[float]:
    out = []
    for _ in range(n):
        req = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        started = time.perf_counter()
        with urllib.request.urlopen(req, timeout=60) as resp:
            resp.read()
        out.append(time.perf_counter() - started)
    return out


def _config(primary: str, shadow: str | None, max_wait_ms: int) -> dict:
    variants = {"current": {"url": primary, "model": "eos", "weight": 1}}
    eos: dict = {"variants": variants}
    if shadow is not None:
        variants["candidate"] = {"url": shadow, "model": "eos", "weight": 0}
        eos["shadow"] = {"variant": "candidate", "max_wait_ms": max_wait_ms}
    return {"services": {"eos": eos}, "usage": {"enabled": False}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--max-wait-ms", type=int, default=400)
    args = parser.parse_args(argv)
    body = predict_body(slide_bytes(ROOT / "samples" / "slide.jpg"))
    wait_s = args.max_wait_ms / 1000.0
    stubs = {
        "primary": start_stub(PRIMARY_S),
        "fast": start_stub(PRIMARY_S),
        "slow": start_stub(wait_s * 5),
    }
    results: dict[str, float] = {}
    try:
        for name, shadow in (("none", None), ("fast", "fast"), ("slow", "slow")):
            url = None if shadow is None else stubs[shadow].url
            gw = start_gateway(_config(stubs["primary"].url, url, args.max_wait_ms))
            try:
                endpoint = gw.url + "/v1/models/eos:predict"
                _timed(endpoint, body, 3)  # warm: connections, first decode
                results[name] = median(_timed(endpoint, body, args.requests))
            finally:
                gw.stop()
    finally:
        for stub in stubs.values():
            stub.stop()
    bound = results["none"] + wait_s
    goals = {
        "slow shadow within primary + max_wait_ms": results["slow"] <= bound,
        "fast shadow adds under 50% to the answer": results["fast"] <= 1.5 * results["none"],
    }
    print(f"median :predict, {args.requests} requests, max_wait_ms {args.max_wait_ms}")
    for name, value in results.items():
        print(f"  shadow {name:5s} {value * 1000:8.1f} ms")
    for goal, met in goals.items():
        print(f"  {'met    ' if met else 'NOT MET'} {goal}")
    out = save_results(
        "shadow_latency",
        {"max_wait_ms": args.max_wait_ms, "median_s": results, "goals": goals},
    )
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
