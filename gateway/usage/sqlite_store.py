"""The embedded default: usage records, daily counters and allowance ledgers in one local
SQLite file, behind the same interface as Firestore (:class:`~gateway.usage.stores.UsageStore`).

Several threads and several worker processes write to the same file: WAL journal, a busy
timeout, one connection per thread, and each record with its counters in one
``BEGIN IMMEDIATE`` transaction.  A record whose id is already there is not counted again.
One row per day's counters is enough here (SQLite takes thousands of updates a second to a
row), so ``usage.counter_shards`` has nothing to spread.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.usage.records import COUNTERS, UsageRecord

BUSY_TIMEOUT_MS = 10_000

# (column, path in the record's fields)
_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("request_id", ("request_id",)),
    ("day", ("day",)),
    ("principal", ("principal",)),
    ("auth_method", ("auth_method",)),
    ("service", ("service",)),
    ("route", ("route",)),
    ("status", ("status",)),
    ("error_code", ("error_code",)),
    ("image_bytes", ("image", "bytes")),
    ("image_width", ("image", "width")),
    ("image_height", ("image", "height")),
    ("image_format", ("image", "format")),
    ("instances", ("instances",)),
    ("images", ("images",)),
    ("tiles", ("tiles",)),
    ("detections", ("detections",)),
    ("counted", ("counted",)),
    ("raw_detections", ("raw_detections",)),
    ("threshold", ("threshold",)),
    ("latency_total_ms", ("latency_ms", "total")),
    ("latency_backend_ms", ("latency_ms", "backend")),
    ("backend_model", ("backend", "model")),
    ("backend_version", ("backend", "version")),
)


def connect(path: Path) -> sqlite3.Connection:
    """A connection set up for many writers: WAL, busy timeout, autocommit mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    _set_wal(conn)
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _set_wal(conn: sqlite3.Connection) -> None:
    """WAL is a property of the file, set by the first connection; one opened while another
    is switching it is told "database is locked" at once (the busy timeout does not cover
    it), so it tries again within the same timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SQLiteStore:
    name = "SQLite"

    def __init__(self, path: Path, prefix: str = "") -> None:
        self.path = path
        self.usage_table = f'"{prefix}usage"'
        self.daily_table = f'"{prefix}usage_daily"'
        self.quotas_table = f'"{prefix}quotas"'
        self.ledger_table = f'"{prefix}usage_allowances"'
        self.where = f"sqlite:{path}"
        self._local = threading.local()
        self._schema_lock = threading.Lock()
        self._schema_ready = False

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
            self._ensure_schema(conn)
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        with self._schema_lock:
            if self._schema_ready:
                return
            columns = ", ".join(
                f"{name} {'TEXT PRIMARY KEY' if name == 'request_id' else ''}"
                for name, _ in _COLUMNS
            )
            counters = ", ".join(f"{name} INTEGER NOT NULL DEFAULT 0" for name in COUNTERS)
            conn.executescript(
                f"""
                CREATE TABLE IF NOT EXISTS {self.usage_table} (ts TEXT NOT NULL, {columns});
                CREATE INDEX IF NOT EXISTS "{self.usage_table[1:-1]}_day"
                    ON {self.usage_table} (day);
                CREATE TABLE IF NOT EXISTS {self.daily_table} (
                    id TEXT PRIMARY KEY, principal TEXT NOT NULL, service TEXT NOT NULL,
                    day TEXT NOT NULL, {counters});
                CREATE INDEX IF NOT EXISTS "{self.daily_table[1:-1]}_principal_day"
                    ON {self.daily_table} (principal, day);
                CREATE TABLE IF NOT EXISTS {self.quotas_table} (
                    principal TEXT PRIMARY KEY, daily_images INTEGER);
                CREATE TABLE IF NOT EXISTS {self.ledger_table} (
                    ledger TEXT NOT NULL, idx INTEGER NOT NULL, amount INTEGER NOT NULL,
                    PRIMARY KEY (ledger, idx));
                """
            )
            self._add_columns(conn)
            self._schema_ready = True

    def _add_columns(self, conn: sqlite3.Connection) -> None:
        """A file written by an older version gets the columns added since (counters at 0,
        record fields null: :func:`~gateway.usage.records.detection_counts` reads those)."""
        wanted = {
            self.usage_table: [(name, "") for name, _ in _COLUMNS],
            self.daily_table: [(name, " INTEGER NOT NULL DEFAULT 0") for name in COUNTERS],
        }
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table, columns in wanted.items():
                have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                for name, decl in columns:
                    if name not in have:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {name}{decl}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def warm(self) -> None:
        self._conn()

    def commit(self, record: UsageRecord, *, spooled: bool = False) -> bool:
        """Store the record and add its counters, atomically; False if it was already there.

        ``ts`` is always the request's own time here, so a late write needs no marking.
        """
        values = [record.time.isoformat()] + [_get(record.fields, p) for _, p in _COLUMNS]
        names = ", ".join(["ts"] + [name for name, _ in _COLUMNS])
        marks = ", ".join("?" for _ in values)
        inc = record.increments
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(
                f"INSERT OR IGNORE INTO {self.usage_table} ({names}) VALUES ({marks})", values
            )
            applied = cur.rowcount == 1
            if applied:
                conn.execute(
                    f"""INSERT INTO {self.daily_table}
                        (id, principal, service, day, {", ".join(COUNTERS)})
                        VALUES (?, ?, ?, ?, {", ".join("?" for _ in COUNTERS)})
                        ON CONFLICT(id) DO UPDATE SET
                        {", ".join(f"{c} = {c} + excluded.{c}" for c in COUNTERS)}""",
                    [record.daily_id, record.principal, record.service, record.day]
                    + [inc.get(c, 0) for c in COUNTERS],
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return applied

    def daily_images(self, principal: str, day: str) -> int:
        row = (
            self._conn()
            .execute(
                f"SELECT COALESCE(SUM(images), 0) FROM {self.daily_table} "
                "WHERE principal = ? AND day = ?",
                (principal, day),
            )
            .fetchone()
        )
        return int(row[0])

    def quota_override(self, principal: str) -> tuple[bool, int | None]:
        row = (
            self._conn()
            .execute(
                f"SELECT daily_images FROM {self.quotas_table} WHERE principal = ?", (principal,)
            )
            .fetchone()
        )
        return (False, None) if row is None else (True, row[0])

    def append_entry(self, ledger: str, index: int, amount: int, meta: dict[str, Any]) -> bool:
        cur = self._conn().execute(
            f"INSERT OR IGNORE INTO {self.ledger_table} (ledger, idx, amount) VALUES (?, ?, ?)",
            (ledger, index, amount),
        )
        return cur.rowcount == 1

    def entries_after(self, ledger: str, index: int) -> list[tuple[int, int]]:
        rows = self._conn().execute(
            f"SELECT idx, amount FROM {self.ledger_table} WHERE ledger = ? AND idx > ? "
            "ORDER BY idx",
            (ledger, index),
        )
        return [(int(i), int(a)) for i, a in rows]

    def set_quota(self, principal: str, daily_images: int | None) -> None:
        self._conn().execute(
            f"INSERT INTO {self.quotas_table} (principal, daily_images) VALUES (?, ?) "
            "ON CONFLICT(principal) DO UPDATE SET daily_images = excluded.daily_images",
            (principal, daily_images),
        )

    def daily(self, principal: str, service: str, day: str) -> dict[str, Any] | None:
        conn = self._conn()
        cur = conn.execute(
            f"SELECT principal, service, day, {', '.join(COUNTERS)} FROM {self.daily_table} "
            "WHERE principal = ? AND service = ? AND day = ?",
            (principal, service, day),
        )
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cur.description], row, strict=True))

    def day_totals(self, principal: str, day: str) -> list[dict[str, Any]]:
        cur = self._conn().execute(
            f"SELECT principal, service, day, {', '.join(COUNTERS)} FROM {self.daily_table} "
            "WHERE principal = ? AND day = ? ORDER BY service",
            (principal, day),
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    def records(
        self,
        since: str | None = None,
        principal: str | None = None,
        service: str | None = None,
        until: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Records as nested dicts shaped like the Firestore documents."""
        where, args = [], []
        for column, value, op in (
            ("day", since, ">="),
            ("day", until, "<="),
            ("principal", principal, "="),
            ("service", service, "="),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        sql = f"SELECT ts, {', '.join(n for n, _ in _COLUMNS)} FROM {self.usage_table}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        for row in self._conn().execute(sql, args):
            doc: dict[str, Any] = {"ts": row[0]}
            for (_, path), value in zip(_COLUMNS, row[1:], strict=True):
                _put(doc, path, value)
            yield doc

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _get(fields: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = fields
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _put(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc.setdefault(key, {})
    doc[path[-1]] = value
