"""The ``usage`` section of the configuration, checked once at start-up."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import Config, ConfigError, on_google_cloud
from gateway.firestore_client import firestore_target
from gateway.schema import BOOL, INTEGER, NUMBER, STRING, Fields

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_\-]{0,64}$")

CONFIG_SCHEMA = Fields(  # the ``usage`` section
    {
        "enabled": BOOL,
        "collection_prefix": STRING,
        "firestore": Fields(
            {
                "project": STRING,
                "database": STRING,
                "write_timeout_s": NUMBER,
                "read_timeout_s": NUMBER,
                "retry_after_s": NUMBER,
            }
        ),
        "sqlite": Fields({"path": STRING}),
        "spool_path": STRING,
        "flush_batch": INTEGER,
        "spool_max_records": INTEGER,
        "quota_cache_s": NUMBER,
        "flush_budget_s": NUMBER,
    }
)


def _state_dir() -> Path:
    """Where local files go: ``.gateway/`` here, ``/tmp`` on Cloud Functions (read-only /)."""
    return Path("/tmp/gateway") if on_google_cloud() else Path(".gateway")


def _seconds(raw: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{where}.{key} must be a positive number of seconds, got {value!r}")
    return float(value)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    return value


@dataclass(frozen=True)
class UsageSettings:
    enabled: bool
    prefix: str
    firestore: tuple[str, str] | None  # (project, database) or None: SQLite
    sqlite_path: Path
    spool_path: Path
    write_timeout_s: float  # deadline of one commit
    read_timeout_s: float  # deadline of the quota read
    retry_after_s: float  # after a failure, records go to the spool this long before a retry
    quota_cache_s: float  # how long per-principal quota overrides are cached
    flush_batch: int  # spooled records sent per request at most
    flush_budget_s: float  # a request starts no spooled-record commit after this long
    spool_max_records: int  # beyond this a record is only logged (the disk/tmpfs is finite)

    @property
    def collections(self) -> dict[str, str]:
        return {
            "usage": f"{self.prefix}usage",
            "usage_daily": f"{self.prefix}usage_daily",
            "quotas": f"{self.prefix}quotas",
        }


def usage_settings(config: Config) -> UsageSettings:
    raw = _mapping(config.usage, "usage")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("usage.enabled must be true or false")
    prefix = raw.get("collection_prefix") or ""
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise ConfigError(
            f"usage.collection_prefix must be up to 64 letters, digits, '_' or '-', got {prefix!r}"
        )
    fs = _mapping(raw.get("firestore"), "usage.firestore")
    sq = _mapping(raw.get("sqlite"), "usage.sqlite")
    state = _state_dir()
    sqlite_path = Path(str(sq.get("path") or state / "usage.sqlite3"))
    spool_path = Path(str(raw.get("spool_path") or state / "usage-spool.sqlite3"))
    flush_batch = raw.get("flush_batch", 20)
    if isinstance(flush_batch, bool) or not isinstance(flush_batch, int) or flush_batch < 1:
        raise ConfigError("usage.flush_batch must be a positive integer")
    spool_max = raw.get("spool_max_records", 100_000)
    if isinstance(spool_max, bool) or not isinstance(spool_max, int) or spool_max < 0:
        raise ConfigError("usage.spool_max_records must be a whole number >= 0")
    return UsageSettings(
        enabled=enabled,
        prefix=prefix,
        firestore=firestore_target(config),
        sqlite_path=sqlite_path,
        spool_path=spool_path,
        write_timeout_s=_seconds(fs, "write_timeout_s", 2.0, "usage.firestore"),
        read_timeout_s=_seconds(fs, "read_timeout_s", 1.0, "usage.firestore"),
        retry_after_s=_seconds(fs, "retry_after_s", 5.0, "usage.firestore"),
        quota_cache_s=_seconds(raw, "quota_cache_s", 30.0, "usage"),
        flush_batch=flush_batch,
        flush_budget_s=_seconds(raw, "flush_budget_s", 0.1, "usage"),
        spool_max_records=spool_max,
    )
