"""Records that could not reach Firestore yet, kept in a local SQLite file until they do.

Gunicorn workers on one machine share the file.  SQLite's own locking serialises writers,
and a flushing worker first *claims* a few rows for a lease (so two workers do not send the
same record at once, and a worker that dies mid-flush only delays its rows until the lease
runs out).  Sending a record twice is harmless anyway: Firestore refuses the second copy
(``create`` precondition) and its counters with it.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from gateway.usage.records import UsageRecord
from gateway.usage.sqlite_store import connect

CLAIM_LEASE_S = 30.0


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            conn.execute(
                """CREATE TABLE IF NOT EXISTS spool (
                    request_id TEXT PRIMARY KEY, principal TEXT NOT NULL, day TEXT NOT NULL,
                    images INTEGER NOT NULL, payload TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0, claimed_until REAL NOT NULL DEFAULT 0)"""
            )
            self._local.conn = conn
        return conn

    def exists(self) -> bool:
        return self.path.exists()

    def add(self, record: UsageRecord) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO spool (request_id, principal, day, images, payload) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                record.request_id,
                record.principal,
                record.day,
                record.images,
                json.dumps(record.to_json(), separators=(",", ":")),
            ),
        )

    def pending(self) -> int:
        if not self.exists():
            return 0
        return int(self._conn().execute("SELECT COUNT(*) FROM spool").fetchone()[0])

    def claim(self, limit: int) -> list[UsageRecord]:
        """Take up to ``limit`` unclaimed records for this worker for ``CLAIM_LEASE_S``."""
        if not self.exists():
            return []
        now = time.time()
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute(
                "SELECT request_id, payload FROM spool WHERE claimed_until < ? "
                "ORDER BY rowid LIMIT ?",
                (now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE spool SET claimed_until = ?, attempts = attempts + 1 WHERE request_id = ?",
                [(now + CLAIM_LEASE_S, rid) for rid, _ in rows],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return [UsageRecord.from_json(json.loads(payload)) for _, payload in rows]

    def remove(self, request_id: str) -> None:
        self._conn().execute("DELETE FROM spool WHERE request_id = ?", (request_id,))

    def release(self, request_ids: list[str]) -> None:
        self._conn().executemany(
            "UPDATE spool SET claimed_until = 0 WHERE request_id = ?",
            [(rid,) for rid in request_ids],
        )
