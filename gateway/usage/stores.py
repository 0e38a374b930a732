"""The one interface every usage store implements, and where records live.

The recorder, the quota accounting, the report and the replay see only
:class:`UsageStore`; :class:`~gateway.usage.sqlite_store.SQLiteStore` (the embedded
default) and :class:`~gateway.usage.firestore_store.FirestoreStore` implement it.

Allowance ledgers (see :mod:`gateway.usage.allowance`) are append-only logs: entry ``i``
is created only if it does not exist yet, so appending is a compare-and-swap on the log's
length that both SQLite and Firestore can do without transactions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from gateway.config import Config, read_config_file
from gateway.usage.records import UsageRecord
from gateway.usage.settings import UsageSettings, usage_settings


class StoreUnavailable(Exception):
    """The store did not answer in time or refused the call."""


class UsageStore(Protocol):
    name: str  # "Firestore", "SQLite": for log lines
    where: str  # for logs and the report: "firestore:project/db/usage", "sqlite:path"

    def warm(self) -> None:
        """Prepare the connection so the request's commit does not wait for it."""

    def commit(self, record: UsageRecord, *, spooled: bool = False) -> bool:
        """Store the record with its counters, atomically; False if it was already there."""

    def daily_images(self, principal: str, day: str) -> int:
        """Images counted for ``principal`` on ``day`` over all services."""

    def daily(self, principal: str, service: str, day: str) -> dict[str, Any] | None:
        """The day's counters of one principal and service (summed over shards)."""

    def day_totals(self, principal: str, day: str) -> list[dict[str, Any]]:
        """The day's counters of one principal, one dict per service (summed over shards)."""

    def quota_override(self, principal: str) -> tuple[bool, int | None]:
        """(a ``quotas`` entry exists, its ``daily_images``)."""

    def append_entry(self, ledger: str, index: int, amount: int, meta: dict[str, Any]) -> bool:
        """Create entry ``index`` of ``ledger``; False when it exists already."""

    def entries_after(self, ledger: str, index: int) -> list[tuple[int, int]]:
        """(index, amount) of the ledger's entries past ``index``, in order."""

    def records(
        self,
        since: str | None = None,
        principal: str | None = None,
        service: str | None = None,
        until: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Usage records of the UTC days ``since`` to ``until`` (both included), shaped like
        the Firestore documents."""


def open_store(config: Config, settings: UsageSettings) -> UsageStore:
    """The store this configuration names; nothing is connected until it is used."""
    if settings.firestore is not None:
        from gateway.usage.firestore_store import FirestoreStore  # deferred: heavy import

        return FirestoreStore(settings)
    from gateway.usage.sqlite_store import SQLiteStore

    return SQLiteStore(settings.sqlite_path, settings.prefix)


def configured_store(create: bool = False) -> tuple[str, UsageStore | None]:
    """For the command-line tools: (where, the store) under the current configuration
    (``GATEWAY_CONFIG``, ``FIRESTORE_EMULATOR_HOST`` / ``GOOGLE_CLOUD_PROJECT``); the store
    is None for a SQLite file that does not exist yet, unless ``create`` asks for it."""
    raw, source = read_config_file()  # the usage section is all these tools read
    usage = raw.get("usage") if isinstance(raw, dict) else None
    config = Config(services={}, usage=usage or {}, source=source, raw=raw)
    settings = usage_settings(config)
    if settings.firestore is None and not settings.sqlite_path.exists():
        where = f"sqlite:{settings.sqlite_path}"
        if not create:
            return where, None
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    store = open_store(config, settings)
    return store.where, store
