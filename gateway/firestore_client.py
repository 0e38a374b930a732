"""One lazily created Firestore client per process, shared by usage logging and auth.

Importing ``google.cloud.firestore`` costs a noticeable part of a cold start, so nothing
here imports it until a request actually needs Firestore.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from gateway.config import Config

_lock = threading.Lock()
_clients: dict[tuple[str, str], Any] = {}


def firestore_target(config: Config) -> tuple[str, str] | None:
    """(project, database) when Firestore is configured, else None (embedded default).

    Firestore is used when ``usage.firestore.project`` is set in the config, or when
    ``FIRESTORE_EMULATOR_HOST`` is set (project from ``GOOGLE_CLOUD_PROJECT``).
    """
    fs = config.usage.get("firestore") or {}
    project = fs.get("project") if isinstance(fs, dict) else None
    database = (fs.get("database") if isinstance(fs, dict) else None) or "(default)"
    if project:
        return str(project), str(database)
    if os.environ.get("FIRESTORE_EMULATOR_HOST"):
        project = os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCLOUD_PROJECT")
        return (project or "demo-gateway"), str(database)
    return None


def get_client(config: Config) -> Any | None:
    """The shared ``google.cloud.firestore.Client``, or None when Firestore is not configured."""
    target = firestore_target(config)
    if target is None:
        return None
    client = _clients.get(target)
    if client is not None:
        return client
    with _lock:
        client = _clients.get(target)
        if client is None:
            from google.cloud import firestore  # deferred: heavy import

            client = firestore.Client(project=target[0], database=target[1])
            _clients[target] = client
    return client


def reset_clients() -> None:
    """Drop cached clients (tests; or after a channel is known to be broken)."""
    with _lock:
        _clients.clear()
