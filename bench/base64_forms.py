"""Base64 as TF Serving reads it: what each form a client may send costs to decode.

Usage::

    .venv/bin/python bench/base64_forms.py [--repeat 50]

For the 1920x1440 real slide: median time of ``jsonio.b64decode_strict`` on the forms
encoders write (one padded line, the common case on the SIMD path; no padding; lines of
76 letters as ``base64`` writes them; MIME's CRLF lines), and each one's ratio to the
one-line form measured in the same run.  Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository's packages

from bench.common import DATA  # noqa: E402  (the real photographs: GATEWAY_TEST_DATA)
from gateway.jsonio import b64decode_strict  # noqa: E402

SLIDE = DATA / "real-slide-1920x1440.jpg"


def _median_ms(text: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        b64decode_strict(text, "image")
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    data = SLIDE.read_bytes()
    one_line = base64.b64encode(data).decode()
    forms = {
        "one padded line": one_line,
        "no padding": one_line.rstrip("="),
        "76-letter lines (base64)": base64.encodebytes(data).decode(),
        "MIME (CRLF lines)": base64.encodebytes(data).decode().replace("\n", "\r\n"),
    }
    for text in forms.values():
        assert b64decode_strict(text, "image") == data
    print(f"{SLIDE.name}, {len(data):,} bytes; {platform.machine()} {platform.processor()}")
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%MZ}, median of {args.repeat}")
    reference = _median_ms(one_line, args.repeat)
    for name, text in forms.items():
        ms = reference if text is one_line else _median_ms(text, args.repeat)
        print(f"  {name:28s} {ms:8.3f} ms  {ms / reference:7.1f}x the one-line form")


if __name__ == "__main__":
    main()
