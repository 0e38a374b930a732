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
        "store": STRING,
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
        "counter_shards": INTEGER,
    }
)
STORES = ("auto", "firestore", "sqlite")
MAX_COUNTER_SHARDS = 100


def _state_dir() -> Path:
    """Where local files go: ``.gateway/`` here, ``/tmp`` on Cloud Functions (read-only /)."""
    return Path("/tmp/gateway") if on_google_cloud() else Path(".gateway")


def _seconds(raw: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{where}.{key} must be a positive number of seconds, got {value!r}")
    return float(value)


def _whole(raw: Mapping[str, Any], key: str, default: int, lo: int, hi: int | None = None) -> int:
    value = raw.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < lo
        or (hi is not None and value > hi)
    ):
        bound = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"usage.{key} must be a whole number {bound}, got {value!r}")
    return value


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    return value


def validate_usage_section(raw: Any) -> None:
    """Refuse unknown keys (naming key and place) and values of the wrong type or range."""
    CONFIG_SCHEMA.check(raw, "usage")
    _parse(_mapping(raw, "usage"))


@dataclass(frozen=True)
class UsageSettings:
    enabled: bool
    prefix: str
    firestore: tuple[str, str] | None  # (project, database) or None: SQLite
    sqlite_path: Path
    spool_path: Path
    write_timeout_s: float  # deadline of one commit
    read_timeout_s: float  # deadline of a quota read or an allowance claim
    retry_after_s: float  # after a failure, records go to the spool this long before a retry
    quota_cache_s: float  # how long per-principal quota overrides are cached
    flush_batch: int  # spooled records sent per request at most
    flush_budget_s: float  # a request starts no spooled-record commit after this long
    spool_max_records: int  # beyond this a record is only logged (the disk/tmpfs is finite)
    counter_shards: int = 10  # shards of each usage_daily document (Firestore)
    store_choice: str = "auto"  # usage.store as configured

    @property
    def collections(self) -> dict[str, str]:
        return {
            "usage": f"{self.prefix}usage",
            "usage_daily": f"{self.prefix}usage_daily",
            "quotas": f"{self.prefix}quotas",
            "allowances": f"{self.prefix}usage_allowances",
            "comparisons": f"{self.prefix}usage_comparisons",
        }

    @property
    def per_instance_on_cloud(self) -> bool:
        """SQLite on Google Cloud: every instance would count on its own, in its memory."""
        return self.enabled and self.firestore is None and on_google_cloud()


def _parse(raw: Mapping[str, Any]) -> dict[str, Any]:
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("usage.enabled must be true or false")
    store = raw.get("store", "auto")
    if store not in STORES:
        raise ConfigError(f"usage.store must be one of {', '.join(STORES)}, got {store!r}")
    prefix = raw.get("collection_prefix") or ""
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise ConfigError(
            f"usage.collection_prefix must be up to 64 letters, digits, '_' or '-', got {prefix!r}"
        )
    fs = _mapping(raw.get("firestore"), "usage.firestore")
    for key in ("project", "database"):
        if fs.get(key) is not None and not isinstance(fs.get(key), str):
            raise ConfigError(f"usage.firestore.{key} must be a string, got {fs.get(key)!r}")
    sq = _mapping(raw.get("sqlite"), "usage.sqlite")
    for where, value in (
        ("usage.sqlite.path", sq.get("path")),
        ("usage.spool_path", raw.get("spool_path")),
    ):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where} must be a path, got {value!r}")
    state = _state_dir()
    return {
        "enabled": enabled,
        "store_choice": store,
        "prefix": prefix,
        "sqlite_path": Path(str(sq.get("path") or state / "usage.sqlite3")),
        "spool_path": Path(str(raw.get("spool_path") or state / "usage-spool.sqlite3")),
        "write_timeout_s": _seconds(fs, "write_timeout_s", 2.0, "usage.firestore"),
        "read_timeout_s": _seconds(fs, "read_timeout_s", 1.0, "usage.firestore"),
        "retry_after_s": _seconds(fs, "retry_after_s", 5.0, "usage.firestore"),
        "quota_cache_s": _seconds(raw, "quota_cache_s", 30.0, "usage"),
        "flush_batch": _whole(raw, "flush_batch", 20, 1),
        "flush_budget_s": _seconds(raw, "flush_budget_s", 0.1, "usage"),
        "spool_max_records": _whole(raw, "spool_max_records", 100_000, 0),
        "counter_shards": _whole(raw, "counter_shards", 10, 1, MAX_COUNTER_SHARDS),
    }


def usage_settings(config: Config) -> UsageSettings:
    raw = _mapping(config.usage, "usage")
    parsed = _parse(raw)  # unknown keys: validate_usage_section, wired in by the config
    target = (
        None if parsed["store_choice"] == "sqlite" else firestore_target(config, cloud_default=True)
    )
    if parsed["store_choice"] == "firestore" and target is None:
        raise ConfigError(
            "usage.store is firestore but no project is known: set usage.firestore.project "
            "(or GOOGLE_CLOUD_PROJECT, or FIRESTORE_EMULATOR_HOST for an emulator)"
        )
    return UsageSettings(firestore=target, **parsed)
