"""``python -m gateway replay-usage``: store usage records that only reached the logs.

A record the gateway could not store (Firestore down and the instance gone before its
spool was flushed, a full spool, a failing SQLite file) is still written in full to the
log as ``usage_record`` of a WARNING line.  This command reads such lines and stores the
records where the gateway stores them now, exactly once: a record whose request id is
already stored is skipped, so replaying the same logs twice, or logs of records that were
later flushed from a spool, changes nothing.

Input, from files or standard input, in any mix:
- the gateway's own log lines (one JSON object per line, as on stdout);
- Cloud Logging entries (``gcloud logging read ... --format=json``: a JSON array, or one
  entry per line), whose ``jsonPayload`` holds the gateway's line;
- bare records (objects with ``request_id``, ``time``, ``fields``, ``increments``).
Lines that carry no record are ignored; a record that cannot be read is reported.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from gateway.config import ConfigError
from gateway.usage.records import UsageRecord
from gateway.usage.stores import configured_store


@dataclass
class ReplayResult:
    stored: int = 0
    already_stored: int = 0
    unreadable: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "stored": self.stored,
            "already_stored": self.already_stored,
            "unreadable": self.unreadable,
            "failed": self.failed,
        }


def _record_of(obj: Any) -> dict[str, Any] | None:
    """The usage record inside a log line, a Cloud Logging entry or a bare record."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("jsonPayload"), dict):
        obj = obj["jsonPayload"]
    if isinstance(obj.get("usage_record"), dict):
        return obj["usage_record"]
    if {"request_id", "time", "fields", "increments"} <= obj.keys():
        return obj
    return None


def records_in(stream: TextIO, name: str) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """(where, record) for each record found; record None for a line that is broken JSON
    but looks like it was meant to carry one."""
    text = stream.read()
    stripped = text.lstrip()
    if stripped.startswith("["):  # a Cloud Logging export
        try:
            entries = json.loads(stripped)
        except ValueError:
            yield f"{name}: not a JSON array", None
            return
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            rec = _record_of(entry)
            if rec is not None:
                yield f"{name}[{i}]", rec
        return
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line.startswith("{"):
            continue  # plain-text log lines (LOG_FORMAT=text) carry no record
        try:
            obj = json.loads(line)
        except ValueError:
            if "usage_record" in line:
                yield f"{name}:{number}", None
            continue
        rec = _record_of(obj)
        if rec is not None:
            yield f"{name}:{number}", rec


def _store() -> tuple[str, Any]:
    """(where records go, a commit function) under the current configuration."""
    where, store = configured_store(create=True)
    return where, lambda rec: store.commit(rec, spooled=True)  # a late write keeps its time


def replay(found: Iterable[tuple[str, dict[str, Any] | None]], commit: Any) -> ReplayResult:
    """Store each record once; records are independent, so one failure does not stop the rest."""
    result = ReplayResult()
    seen: set[str] = set()
    for where, data in found:
        try:
            if data is None:
                raise ValueError("broken JSON")
            record = UsageRecord.from_json(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            result.unreadable.append(f"{where}: {type(exc).__name__}: {exc}")
            continue
        if record.request_id in seen:  # the same line twice in the input
            result.already_stored += 1
            continue
        seen.add(record.request_id)
        try:
            applied = commit(record)
        except Exception as exc:  # reported per record; the command exits non-zero
            result.failed.append(f"{record.request_id}: {type(exc).__name__}: {exc}")
            continue
        if applied:
            result.stored += 1
        else:
            result.already_stored += 1
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="eos-gateway replay-usage",
        description="Store usage records found in the gateway's log lines, exactly once.",
    )
    parser.add_argument(
        "files", nargs="*", help="log files or Cloud Logging JSON exports; '-' or none: stdin"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    def found() -> Iterator[tuple[str, dict[str, Any] | None]]:
        for name in args.files or ["-"]:
            if name == "-":
                yield from records_in(sys.stdin, "stdin")
            else:
                with open(name, encoding="utf-8") as stream:
                    yield from records_in(stream, name)

    try:
        where, commit = _store()
        result = replay(found(), commit)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cannot read the logs: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"store": where, **result.to_json()}, indent=2))
    else:
        print(f"# {where}")
        print(f"stored {result.stored}, already stored {result.already_stored}")
        for line in result.unreadable:
            print(f"unreadable: {line}")
        for line in result.failed:
            print(f"not stored: {line}")
    return 1 if result.failed or result.unreadable else 0


if __name__ == "__main__":
    raise SystemExit(main())
