"""Where usage records live under the current configuration, for the command-line tools.

The same resolution as the gateway's (``GATEWAY_CONFIG``, ``FIRESTORE_EMULATOR_HOST`` /
``GOOGLE_CLOUD_PROJECT``): Firestore when configured, else the embedded SQLite file.
"""

from __future__ import annotations

from typing import Any

from gateway.config import load_config
from gateway.usage.settings import usage_settings


def configured_store(create: bool = False) -> tuple[str, Any]:
    """(where, the store); the store is None for a SQLite file that does not exist yet,
    unless ``create`` asks for it."""
    config = load_config()
    settings = usage_settings(config)
    if settings.firestore is not None:
        from gateway.usage.firestore_store import FirestoreStore  # deferred: heavy import

        project, database = settings.firestore
        where = f"firestore:{project}/{database}/{settings.collections['usage']}"
        return where, FirestoreStore(config, settings)
    from gateway.usage.sqlite_store import SQLiteStore

    where = f"sqlite:{settings.sqlite_path}"
    if not settings.sqlite_path.exists():
        if not create:
            return where, None
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    return where, SQLiteStore(settings.sqlite_path, settings.prefix)
