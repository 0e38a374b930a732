"""The ``usage`` section of the configuration, checked once at start-up."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import Config, ConfigError, on_google_cloud
from gateway.firestore_client import firestore_target
from gateway.schema import BOOL, INTEGER, NUMBER, STRING, Fields, Setting

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_\-]{0,64}$")

STORES = ("auto", "firestore", "sqlite")
MAX_COUNTER_SHARDS = 100
MIN_SECONDS = 0.001  # every duration here must be positive


def _seconds(default: float) -> Setting:
    return Setting(NUMBER, default, lo=MIN_SECONDS)


# The ``usage`` section: every default written here once; numbers finite and in range
# (``NaN`` and ``.inf`` pass every comparison, so :class:`Setting` refuses them first).
CONFIG_SCHEMA = Fields(
    {
        "enabled": Setting(BOOL, True),
        "store": Setting(STRING, "auto", choices=STORES),
        "collection_prefix": Setting(STRING, ""),
        "firestore": Fields(
            {
                "project": STRING,
                "database": STRING,
                "write_timeout_s": _seconds(2.0),  # deadline of one commit
                "read_timeout_s": _seconds(1.0),  # of a quota read or an allowance claim
                "retry_after_s": _seconds(5.0),
            }
        ),
        "sqlite": Fields({"path": STRING}),
        "spool_path": STRING,
        "flush_batch": Setting(INTEGER, 20, lo=1),
        "spool_max_records": Setting(INTEGER, 100_000, lo=0),
        "quota_cache_s": _seconds(30.0),
        "flush_budget_s": _seconds(0.1),
        "counter_shards": Setting(INTEGER, 10, lo=1, hi=MAX_COUNTER_SHARDS),
    }
)


def _state_dir() -> Path:
    """Where local files go: ``.gateway/`` here, ``/tmp`` on Cloud Functions (read-only /)."""
    return Path("/tmp/gateway") if on_google_cloud() else Path(".gateway")


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
    counter_shards: int = CONFIG_SCHEMA.default("counter_shards")  # of each usage_daily doc
    store_choice: str = CONFIG_SCHEMA.default("store")  # usage.store as configured

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
    values = CONFIG_SCHEMA.read(raw, "usage")
    prefix = values["collection_prefix"] or ""
    if not _PREFIX_RE.match(prefix):
        raise ConfigError(
            f"usage.collection_prefix must be up to 64 letters, digits, '_' or '-', got {prefix!r}"
        )
    fs, sq = values["firestore"], values["sqlite"]
    state = _state_dir()
    return {
        "enabled": values["enabled"],
        "store_choice": values["store"],
        "prefix": prefix,
        "sqlite_path": Path(sq["path"] or state / "usage.sqlite3"),
        "spool_path": Path(values["spool_path"] or state / "usage-spool.sqlite3"),
        "write_timeout_s": fs["write_timeout_s"],
        "read_timeout_s": fs["read_timeout_s"],
        "retry_after_s": fs["retry_after_s"],
        "quota_cache_s": values["quota_cache_s"],
        "flush_batch": values["flush_batch"],
        "flush_budget_s": values["flush_budget_s"],
        "spool_max_records": values["spool_max_records"],
        "counter_shards": values["counter_shards"],
    }


def unwritable(path: Path) -> str | None:
    """Why a SQLite file at ``path`` could not be written, or None when it can.

    Nothing is created: the file is opened for update when it exists, and otherwise its
    nearest existing folder must be a folder this process may write (SQLite also writes
    its journal beside the file).  On a read-only file system, as root too, it cannot.
    """
    folder = path.parent
    try:
        if path.exists():
            if not path.is_file():
                return "it is not a file"
            with open(path, "r+b"):
                pass
        while not folder.exists():
            folder = folder.parent
    except OSError as exc:
        return exc.strerror or str(exc)
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable"
    return None


def check_writable(settings: UsageSettings) -> None:
    """At start: the file records and quotas need is writable, or the start fails.

    A store that cannot be written would turn every commit into a logged failure and
    every quota read into "no quota": quotas silently off.  SQLite keeps records and
    quotas in ``usage.sqlite.path``; with Firestore, records wait in ``usage.spool_path``
    while it is unreachable.
    """
    if not settings.enabled:
        return
    if settings.firestore is None:
        key, path = "usage.sqlite.path", settings.sqlite_path
    else:
        key, path = "usage.spool_path", settings.spool_path
    reason = unwritable(path)
    if reason is not None:
        raise ConfigError(
            f"{key} {str(path)!r} cannot be written ({reason}): usage records and quotas "
            "need it; set it to a writable place or usage.enabled: false"
        )


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
