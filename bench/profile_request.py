"""Profile one ``:predict`` request in-process (cProfile), against the stub backend.

    .venv/bin/python -m bench.profile_request [--slide real-slide-1920x1440.jpg] [--png]

Prints the median in-process time of the request next to Pillow's decode of the same
slide, then the top of the profile, so a change can be judged before the full harness.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time

from bench.common import (
    DATA,
    decode_once,
    predict_body,
    slide_bytes,
    start_stub,
)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slide", default="real-slide-1920x1440.jpg")
    ap.add_argument("--png", action="store_true", help="send the slide re-encoded as PNG")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)

    from flask import Flask

    from gateway.catalog import parse_config
    from gateway.rest.app import handle
    from gateway.runtime import build_gateway, set_gateway
    from gateway.serving import limit_heap_growth

    limit_heap_growth()  # the allocator settings main.py gives the deployed process

    stub = start_stub(0.0)
    try:
        config = parse_config(
            {
                "services": {"eos": {"backend": {"url": stub.url}}},
                "usage": {"enabled": False},
            }
        )
        set_gateway(build_gateway(config))
        data = slide_bytes(DATA / args.slide, png=args.png)
        body = predict_body(data)
        app = Flask("profile")

        def one() -> None:
            with app.test_request_context(
                "/v1/models/eos:predict",
                method="POST",
                data=body,
                content_type="application/json",
            ) as rc:
                resp = handle(rc.request)
                assert resp.status_code == 200, resp.get_data()

        one()
        req, dec = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            one()
            req.append(time.perf_counter() - t)
            t = time.perf_counter()
            decode_once(data)
            dec.append(time.perf_counter() - t)
        r, d = statistics.median(req) * 1e3, statistics.median(dec) * 1e3
        print(f"in-process request {r:.1f} ms, Pillow decode {d:.1f} ms, ratio {r / d:.2f}")
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(5):
            one()
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(args.top)
        print(out.getvalue())
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.top)
        print(out.getvalue())
    finally:
        stub.stop()


if __name__ == "__main__":
    main()
