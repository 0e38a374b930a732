"""One lazily created Firestore client per process, shared by usage logging and auth.

Importing ``google.cloud.firestore`` costs a noticeable part of a cold start, so nothing
here imports it until a request actually needs Firestore.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from gateway.config import Config, on_google_cloud

_lock = threading.Lock()
_clients: dict[tuple[str, str], Any] = {}


def firestore_target(config: Config, *, cloud_default: bool = False) -> tuple[str, str] | None:
    """(project, database) when Firestore is configured, else None (embedded default).

    Firestore is used when ``usage.firestore.project`` is set in the config, when
    ``FIRESTORE_EMULATOR_HOST`` is set (project from ``GOOGLE_CLOUD_PROJECT``), and, with
    ``cloud_default`` (usage records), on Google Cloud (``K_SERVICE`` set): there each
    instance has its own ``/tmp``, so only the project's Firestore gives every instance the
    same records and quotas.  An empty project means the one the runtime's credentials
    belong to (found by the client library).
    """
    fs = config.usage.get("firestore") or {}
    project = fs.get("project") if isinstance(fs, dict) else None
    database = (fs.get("database") if isinstance(fs, dict) else None) or "(default)"
    if project:
        return str(project), str(database)
    env_project = os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCLOUD_PROJECT")
    if os.environ.get("FIRESTORE_EMULATOR_HOST"):
        return (env_project or "demo-gateway"), str(database)
    if cloud_default and on_google_cloud():
        return (env_project or ""), str(database)
    return None


# gRPC shares connections between channels to the same address process-wide, and a
# connection that failed waits out an exponential backoff (up to minutes) before it tries
# again, so even a new client stays cut off long after Firestore is back.  Each client gets
# its own connections and a short backoff instead.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


def new_client(project: str, database: str = "(default)") -> Any:
    """A ``firestore.Client`` whose gRPC channel uses :data:`CHANNEL_OPTIONS`."""
    import grpc
    from google.cloud import firestore  # deferred: heavy import
    from google.cloud.firestore_v1.services.firestore import client as gapic_client
    from google.cloud.firestore_v1.services.firestore.transports import grpc as gapic_grpc

    class Transport(gapic_grpc.FirestoreGrpcTransport):
        @classmethod
        def create_channel(cls, host, credentials=None, options=None, **kwargs):
            options = [*(options or ()), *CHANNEL_OPTIONS]
            return super().create_channel(host, credentials=credentials, options=options, **kwargs)

    class Client(firestore.Client):
        @property
        def _firestore_api(self):  # the stock property, with the transport above
            return self._firestore_api_helper(Transport, gapic_client.FirestoreClient, gapic_client)

        def _emulator_channel(self, transport):
            options = [
                ("Authorization", "Bearer owner"),  # what the stock client sends the emulator
                ("grpc.max_send_message_length", -1),
                ("grpc.max_receive_message_length", -1),
                *CHANNEL_OPTIONS,
            ]
            return grpc.insecure_channel(self._emulator_host, options=options)

    return Client(project=project or None, database=database)


def get_client(config: Config) -> Any | None:
    """The shared ``google.cloud.firestore.Client``, or None when Firestore is not configured."""
    target = firestore_target(config)
    return None if target is None else client_for(target)


def client_for(target: tuple[str, str]) -> Any:
    """The shared client of one (project, database), created on first use."""
    client = _clients.get(target)
    if client is not None:
        return client
    with _lock:
        client = _clients.get(target)
        if client is None:
            client = new_client(project=target[0], database=target[1])
            _clients[target] = client
    return client


def reset_clients() -> None:
    """Drop cached clients (tests; or after a channel is known to be broken)."""
    with _lock:
        _clients.clear()


def discard_client(target: tuple[str, str], client: Any) -> None:
    """Forget ``client`` if it is still the shared one, so the next caller builds a new one.

    After Firestore was unreachable, the old gRPC channel can take many seconds to notice
    that the server is back; a new client connects at once.  Only the failed client is
    dropped, so concurrent callers that already replaced it are not disturbed.
    """
    with _lock:
        if _clients.get(target) is client:
            del _clients[target]
