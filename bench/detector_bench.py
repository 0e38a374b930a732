"""Benchmark of the embedded detector against Pillow's JPEG decode of the same file.

Usage::

    .venv/bin/python bench/detector_bench.py [--repeat 7]

For each real slide: median wall time of Pillow decoding the JPEG to an RGB array and
of ``detect`` on that array (diameter estimated, and given), their ratio, and peak
memory of ``detect`` measured in a fresh subprocess (tracemalloc peak of Python/numpy
allocations, and the growth of the process's max RSS).  Prints a table and writes
JSON to ``bench/results/detector-<timestamp>.json`` (gitignored).

Acceptance: detect / decode <= 10 for real-slide-1920x1440.jpg, and peak
memory < 300 MB for real-slide-large.jpg.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository's packages

from bench.common import DATA  # noqa: E402  (the real photographs: GATEWAY_TEST_DATA)

SLIDES = ["real-slide.jpg", "real-slide-1920x1440.jpg", "real-slide-large.jpg"]

_MEM_CHILD = r"""
import json, resource, sys, tracemalloc
import numpy as np
from PIL import Image
sys.path.insert(0, sys.argv[1])
from gateway.detector import detect
arr = np.asarray(Image.open(sys.argv[2]).convert("RGB"))
detect(arr[:64, :64])  # load modules before measuring
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
det = detect(arr)
cur, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"tracemalloc_peak_mb": peak / 2**20, "rss_growth_mb": (rss1 - rss0) / 1024,
                  "rss_total_mb": rss1 / 1024, "input_mb": arr.nbytes / 2**20,
                  "n": int(len(det.scores))}))
"""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="detector vs JPEG decode benchmark")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)

    import numpy as np
    from PIL import Image

    t0 = time.perf_counter()
    from gateway.detector import detect

    detect(np.zeros((8, 8, 3), np.uint8))
    import_s = time.perf_counter() - t0

    rows = []
    for name in SLIDES:
        path = DATA / name
        if not path.is_file():
            print(f"missing {path}", file=sys.stderr)
            return 1

        def decode(path=path):
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))

        arr = decode()
        t_dec = _median_time(decode, args.repeat)
        t_det = _median_time(lambda arr=arr: detect(arr), args.repeat)
        det = detect(arr)
        n_cut = int((det.scores >= 0.3).sum())
        mem = json.loads(
            subprocess.run(
                [sys.executable, "-c", _MEM_CHILD, str(ROOT), str(path)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        rows.append(
            {
                "slide": name,
                "width": arr.shape[1],
                "height": arr.shape[0],
                "decode_ms": t_dec * 1e3,
                "detect_ms": t_det * 1e3,
                "ratio": t_det / t_dec,
                "detections_at_0.3": n_cut,
                **mem,
            }
        )

    result = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "nproc": os.cpu_count(),
            "cpu": _cpu_model(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pillow": Image.__version__,
        },
        "import_and_first_call_ms": import_s * 1e3,
        "repeat": args.repeat,
        "rows": rows,
    }
    hdr = (
        f"{'slide':26s} {'size':>10s} {'decode':>8s} {'detect':>8s} {'ratio':>6s} "
        f"{'peak MB':>8s} {'RSS MB':>7s} {'n@0.3':>6s}"
    )
    print(f"{result['date']}  nproc={os.cpu_count()}  cpu={_cpu_model()}")
    print(hdr)
    for r in rows:
        print(
            f"{r['slide']:26s} {r['width']:>5d}x{r['height']:<4d} {r['decode_ms']:7.1f}ms "
            f"{r['detect_ms']:7.1f}ms {r['ratio']:6.2f} {r['tracemalloc_peak_mb']:8.1f} "
            f"{r['rss_total_mb']:7.1f} {r['detections_at_0.3']:6d}"
        )
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"detector-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=1))
    print(
        "peak MB: tracemalloc peak of detect(); RSS MB: max RSS of a fresh process that "
        "decoded the slide and ran detect (interpreter and libraries included)"
    )
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
