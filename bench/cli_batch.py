"""What ``--jobs`` buys a batch: ``python -m gateway detect --url`` at --jobs 1 and 4.

    .venv/bin/python -m bench.cli_batch [--slides 24] [--rounds 3]

The gateway runs under functions-framework in front of the TF Serving stub answering
after 200 ms (a deployed model's latency as a client sees it: most of a slide's time is
spent waiting, not computing).  The CLI runs as its own process, --jobs 1 and --jobs 4
interleaved, and each run reports its own slides per second (the ``summary`` of
``--json FILE``, counted from the first upload, so process start-up is left out).  The
reference is --jobs 1 in the same run; the figure is the ratio of the medians.  Goal: at
least 2.5 (4 would be perfect overlap; the gateway's own CPU time per slide is what is
left on a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.common import ROOT, median, start_gateway, start_stub
from bench.run import machine, small_jpeg

GOAL = 2.5
BACKEND_DELAY_S = 0.2


def run_cli(url: str, folder: Path, jobs: int, out: Path) -> float:
    """Slides per second of one CLI run over ``folder``."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "detect", str(folder), "--url", url]
        + ["--jobs", str(jobs), "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the CLI failed ({proc.returncode}): {proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout)["summary"]
    return summary["slides_per_second"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slides", type=int, default=24)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="cli-batch-"))
    folder = work / "slides"
    folder.mkdir()
    data = small_jpeg()
    for i in range(args.slides):
        (folder / f"s{i:03d}.jpg").write_bytes(data)
    stub = start_stub(BACKEND_DELAY_S)
    gw = None
    rates: dict[int, list[float]] = {1: [], 4: []}
    try:
        gw = start_gateway({"services": {"eos": {"backend": {"url": stub.url, "model": "eos"}}}})
        run_cli(gw.url, folder, 4, work / "warm.jsonl")  # the gateway's first requests
        for r in range(args.rounds):
            for jobs in (1, 4) if r % 2 == 0 else (4, 1):
                rates[jobs].append(run_cli(gw.url, folder, jobs, work / f"out-{jobs}.jsonl"))
    finally:
        if gw is not None:
            gw.stop()
        stub.stop()
    one, four = median(rates[1]), median(rates[4])
    ratio = four / one
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ"),
        "machine": machine(),
        "slides": args.slides,
        "backend_delay_s": BACKEND_DELAY_S,
        "jobs_1_slides_per_s": rates[1],
        "jobs_4_slides_per_s": rates[4],
        "ratio": round(ratio, 2),
        "goal": GOAL,
        "verdict": "met" if ratio >= GOAL else "NOT met",
    }
    print(json.dumps(result, indent=2))
    print(
        f"| CLI --jobs 4, {args.slides} slides, backend {BACKEND_DELAY_S * 1000:.0f} ms | "
        f"{four:.2f} slides/s | --jobs 1: {one:.2f} slides/s | {ratio:.2f}x | "
        f">= {GOAL}x | {result['verdict']} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
