"""``python -m gateway usage``: requests, images, detections, errors and latency per day.

Reads the ``usage`` records from wherever the gateway writes them (Firestore when
configured, else the embedded SQLite file), with the same configuration resolution:
``GATEWAY_CONFIG``, ``FIRESTORE_EMULATOR_HOST`` / ``GOOGLE_CLOUD_PROJECT``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable
from datetime import date
from typing import Any

from gateway.config import ConfigError
from gateway.usage.stores import configured_store

COLUMNS = (
    "day",
    "principal",
    "service",
    "requests",
    "images",
    "detections",
    "errors",
    "p50_ms",
    "p95_ms",
)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile: a latency some request really had."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summarize(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (day, principal, service), sorted."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for rec in records:
        key = (str(rec.get("day")), str(rec.get("principal")), str(rec.get("service")))
        row = groups.get(key)
        if row is None:
            row = groups[key] = {
                "day": key[0],
                "principal": key[1],
                "service": key[2],
                "requests": 0,
                "images": 0,
                "detections": 0,
                "errors": 0,
                "_latency": [],
            }
        row["requests"] += 1
        row["images"] += int(rec.get("images") or 0)
        row["detections"] += int(rec.get("detections") or 0)
        row["errors"] += 1 if int(rec.get("status") or 0) >= 400 else 0
        total = (rec.get("latency_ms") or {}).get("total")
        if isinstance(total, (int, float)):
            row["_latency"].append(float(total))
    rows = []
    for key in sorted(groups):
        row = groups[key]
        latency = row.pop("_latency")
        row["p50_ms"] = percentile(latency, 50)
        row["p95_ms"] = percentile(latency, 95)
        rows.append(row)
    return rows


def _day(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2025-01-31") from exc


def _table(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.1f}"
        return str(value)

    grid = [list(COLUMNS)] + [[cell(row[c]) for c in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in grid) for i in range(len(COLUMNS))]
    numeric = {i for i, c in enumerate(COLUMNS) if c not in ("day", "principal", "service")}
    lines = []
    for r in grid:
        parts = [r[i].rjust(widths[i]) if i in numeric else r[i].ljust(widths[i]) for i in
                 range(len(COLUMNS))]  # fmt: skip
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def fetch_records(
    since: str | None, principal: str | None, service: str | None
) -> tuple[str, Iterable[dict[str, Any]]]:
    """(where the records come from, the records) under the current configuration."""
    where, store = configured_store()
    return where, [] if store is None else store.records(since, principal, service)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="eos-gateway usage",
        description="Usage per principal, service and UTC day, from the gateway's usage records.",
    )
    parser.add_argument("--since", type=_day, help="first UTC day to include (YYYY-MM-DD)")
    parser.add_argument("--principal", help="only this principal, e.g. key:lab-script")
    parser.add_argument("--service", help="only this service")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        source, records = fetch_records(args.since, args.principal, args.service)
        rows = summarize(records)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a person reads this: no stack trace for an unreachable store
        print(f"cannot read usage records: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"source": source, "rows": rows}, indent=2))
    else:
        print(f"# {source}")
        print(_table(rows) if rows else "no usage records")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
