"""The usage report's arithmetic: percentiles, and one row per day, principal and service."""

from __future__ import annotations

from gateway.usage.report import percentile, summarize


def test_percentile_and_summary():
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    rows = summarize(
        [
            {"day": "d", "principal": "p", "service": "s", "status": 200, "images": 2,
             "detections": 7, "latency_ms": {"total": 10.0}},
            {"day": "d", "principal": "p", "service": "s", "status": 503, "images": 0,
             "detections": 0, "latency_ms": {"total": 30.0}},
        ]
    )  # fmt: skip
    assert rows == [
        {"day": "d", "principal": "p", "service": "s", "requests": 2, "images": 2,
         "detections": 7, "errors": 1, "p50_ms": 10.0, "p95_ms": 30.0}
    ]  # fmt: skip
