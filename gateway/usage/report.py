"""``eos-gateway usage`` (``python -m gateway usage``): who used how much, when.

Reads the ``usage`` records from wherever the gateway writes them (Firestore when
configured, else the embedded SQLite file), with the same configuration resolution:
``GATEWAY_CONFIG``, ``FIRESTORE_EMULATOR_HOST`` / ``GOOGLE_CLOUD_PROJECT``.  The counts are
kept apart by meaning: ``images`` (slides served), ``counted`` (cells counted: detections at
or above the threshold each answer used) and ``raw_detections`` (detections answered uncut,
at any score, by TF Serving's ``:predict`` and V2 ``infer`` without a threshold), so a
count is never mixed with a model's raw output.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from gateway.config import ConfigError
from gateway.usage.periods import HELP, PeriodError, first_day, iso_week, last_day
from gateway.usage.records import detection_counts
from gateway.usage.stores import configured_store

GROUPS = ("day", "week", "principal", "service")  # what --by takes
DEFAULT_BY = ("day", "principal", "service")
COUNTS = ("requests", "images", "counted", "raw_detections", "errors", "p50_ms", "p95_ms")
PREFIXES = ("key:", "google:", "firebase:")  # how a principal is written in the records
TOTAL = "TOTAL"


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile: a latency some request really had."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def principal_matcher(wanted: str) -> Callable[[str], bool]:
    """Whether a record's principal is the one asked for: ``key:lab-script`` and
    ``lab-script`` name the same key, ``google:a@lab.org`` and ``a@lab.org`` the same
    account (e-mail addresses compared without regard to case)."""
    wanted = wanted.strip()

    def same(name: str, other: str) -> bool:
        return name.casefold() == other.casefold() if "@" in name else name == other

    if wanted.startswith(PREFIXES) or wanted == "anonymous":
        return lambda principal: same(principal, wanted)

    def matches(principal: str) -> bool:
        if same(principal, wanted):
            return True
        kind, _, name = principal.partition(":")
        return f"{kind}:" in PREFIXES and same(name, wanted)

    return matches


def _group_key(rec: dict[str, Any], by: Sequence[str]) -> tuple[str, ...]:
    day = str(rec.get("day"))
    values = {
        "day": day,
        "week": iso_week(day),
        "principal": str(rec.get("principal")),
        "service": str(rec.get("service")),
    }
    return tuple(values[g] for g in by)


def _new_row() -> dict[str, Any]:
    return {"requests": 0, "images": 0, "counted": 0, "raw_detections": 0, "errors": 0,
            "_latency": []}  # fmt: skip


def _add(row: dict[str, Any], rec: dict[str, Any]) -> None:
    counted, raw = detection_counts(rec)
    row["requests"] += 1
    row["images"] += int(rec.get("images") or 0)
    row["counted"] += counted
    row["raw_detections"] += raw
    row["errors"] += 1 if int(rec.get("status") or 0) >= 400 else 0
    total = (rec.get("latency_ms") or {}).get("total")
    if isinstance(total, (int, float)):
        row["_latency"].append(float(total))


def _close(row: dict[str, Any]) -> dict[str, Any]:
    latency = row.pop("_latency")
    row["p50_ms"] = percentile(latency, 50)
    row["p95_ms"] = percentile(latency, 95)
    return row


def summarize(
    records: Iterable[dict[str, Any]], by: Sequence[str] = DEFAULT_BY
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(one row per group, sorted; the total over every record)."""
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    total = _new_row()
    for rec in records:
        key = _group_key(rec, by)
        row = groups.get(key)
        if row is None:
            row = groups[key] = {**dict(zip(by, key, strict=True)), **_new_row()}
        _add(row, rec)
        _add(total, rec)
    return [_close(groups[key]) for key in sorted(groups)], _close(total)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def table(rows: list[dict[str, Any]], total: dict[str, Any], by: Sequence[str]) -> str:
    columns = [*by, *COUNTS]
    grid = [columns] + [[_cell(row[c]) for c in columns] for row in rows]
    grid.append([TOTAL] + [""] * (len(by) - 1) + [_cell(total[c]) for c in COUNTS])
    widths = [max(len(r[i]) for r in grid) for i in range(len(columns))]
    lines = []
    for r in grid:
        parts = [r[i].ljust(widths[i]) if i < len(by) else r[i].rjust(widths[i])
                 for i in range(len(columns))]  # fmt: skip
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def csv_text(rows: list[dict[str, Any]], total: dict[str, Any], by: Sequence[str]) -> str:
    """One line per group and a last line whose first column is ``TOTAL``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*by, *COUNTS])
    for row in rows:
        writer.writerow([row[c] if row[c] is not None else "" for c in (*by, *COUNTS)])
    writer.writerow([TOTAL] + [""] * (len(by) - 1) + [
        total[c] if total[c] is not None else "" for c in COUNTS])  # fmt: skip
    return out.getvalue()


def _by(text: str) -> tuple[str, ...]:
    groups = tuple(g.strip() for g in text.split(",") if g.strip())
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise argparse.ArgumentTypeError(
            f"{text!r}: group by one or more of {', '.join(GROUPS)} (comma-separated)"
        )
    return groups


def _day_arg(pick: Callable[[str], str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        try:
            return pick(text)
        except PeriodError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def fetch_records(
    since: str | None,
    principal: str | None,
    service: str | None,
    until: str | None = None,
) -> tuple[str, Iterable[dict[str, Any]] | None]:
    """(where the records come from, the records) under the current configuration; the
    records are None when there is no store to read (a SQLite file that does not exist)."""
    where, store = configured_store()
    if store is None:
        return where, None
    match = principal_matcher(principal) if principal else None
    records = store.records(since, None, service, until)
    if match is None:
        return store.where, records
    return store.where, (r for r in records if match(str(r.get("principal"))))


def missing_store(where: str) -> str:
    """What a person needs to know when the database the configuration names is not there."""
    path = Path(where.removeprefix("sqlite:")).resolve()
    config = os.environ.get("GATEWAY_CONFIG")
    named = f"usage.sqlite.path in {config}" if config else "the embedded default path"
    return (
        f"no usage database at {path} ({named}, relative to the folder the command runs in, "
        f"{Path.cwd()}): run it from the folder the gateway runs in, or set GATEWAY_CONFIG "
        "to the gateway's configuration"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eos-gateway usage",
        description=(
            "Usage from the gateway's records: requests, images (slides), cells counted at "
            "each answer's threshold, raw detections answered uncut, errors and latency, "
            "per UTC day, principal and service, or totals per --by group; a TOTAL line "
            "ends the table."
        ),
    )
    parser.add_argument(
        "--since", type=_day_arg(first_day), metavar="WHEN", help=f"first UTC day: {HELP}"
    )
    parser.add_argument(
        "--until", type=_day_arg(last_day), metavar="WHEN", help="last UTC day, the same forms"
    )
    parser.add_argument(
        "--by",
        type=_by,
        default=DEFAULT_BY,
        metavar="GROUPS",
        help="totals per group: principal, service, day or week, comma-separated "
        "(default: day,principal,service)",
    )
    parser.add_argument(
        "--principal",
        help="only this caller: an API key id, e-mail or Firebase uid, with or without its "
        "key:/google:/firebase: prefix",
    )
    parser.add_argument("--service", help="only this service")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="output format"
    )
    fmt.add_argument("--json", dest="format", action="store_const", const="json",
                     help="the same as --format json")  # fmt: skip
    fmt.add_argument("--csv", dest="format", action="store_const", const="csv",
                     help="the same as --format csv")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.since and args.until and args.since > args.until:
        print(f"--since {args.since} is after --until {args.until}", file=sys.stderr)
        return 2
    source = "the usage store"
    try:
        source, records = fetch_records(args.since, args.principal, args.service, args.until)
        if records is None:
            print(missing_store(source), file=sys.stderr)
            return 1
        rows, total = summarize(records, args.by)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a person reads this: no stack trace for an unreachable store
        print(f"cannot read usage records from {source}: {type(exc).__name__}: {exc}",
              file=sys.stderr)  # fmt: skip
        return 1
    period = f"{args.since or 'the first record'} to {args.until or 'today'} (UTC)"
    empty = f"no usage records in {source} from {period}"
    if args.format == "json":
        doc = {"source": source, "since": args.since, "until": args.until, "by": list(args.by),
               "rows": rows, "total": total}  # fmt: skip
        print(json.dumps(doc, indent=2))
    elif args.format == "csv":
        sys.stdout.write(csv_text(rows, total, args.by))
    elif rows:
        print(f"# {source}, {period}")
        print(table(rows, total, args.by))
    else:
        print(empty)
        return 0
    if not rows:  # the data is still well-formed; a person is told why it is empty
        print(empty, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
