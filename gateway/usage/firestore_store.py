"""Usage records, daily counters and quota overrides in Firestore.

Imported only when Firestore is configured and first used, so a cold start that never
touches Firestore never pays for importing ``google.cloud.firestore``.

Every call passes ``retry=None`` and a timeout: the client's default retry turns a short
timeout against an unreachable server into a wait of a minute.  After a failure the shared
client is dropped, because its gRPC channel can take many seconds to reconnect.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from gateway import firestore_client
from gateway.config import Config
from gateway.usage.quotas import parse_limit
from gateway.usage.records import UsageRecord, quota_doc_id
from gateway.usage.settings import UsageSettings

_TRANSIENT_FAILURE = 3  # grpc_connectivity_state in gRPC core


class StoreUnavailable(Exception):
    """Firestore did not answer in time or refused the call."""


class FirestoreStore:
    def __init__(self, config: Config, settings: UsageSettings) -> None:
        self.config = config
        self.settings = settings
        names = settings.collections
        self.usage_name = names["usage"]
        self.daily_name = names["usage_daily"]
        self.quotas_name = names["quotas"]

    def client(self) -> Any:
        client = firestore_client.get_client(self.config)
        if client is None:
            raise StoreUnavailable("Firestore is not configured")
        return client

    def forget_client(self, client: Any) -> None:
        firestore_client.discard_client(self.config, client)

    def _call(self, fn, *args, **kwargs):
        """Run ``fn(client)``; a refused connection is tried once more on a new client.

        A channel that failed to connect backs off for seconds before it tries again, so
        after an outage the first call on an old client is refused even though the server
        is back; a new client connects at once (and fails at once if the server is still
        down).  Repeating a commit is safe: the record's ``create`` precondition makes a
        second copy fail with AlreadyExists.
        """
        client = self.client()
        try:
            return fn(client, *args, **kwargs)
        except gexc.AlreadyExists:
            raise
        except gexc.ServiceUnavailable:
            self.forget_client(client)
        except (gexc.GoogleAPIError, OSError, ValueError, RuntimeError) as exc:
            self.forget_client(client)
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        client = self.client()
        try:
            return fn(client, *args, **kwargs)
        except gexc.AlreadyExists:
            raise
        except (gexc.GoogleAPIError, OSError, ValueError, RuntimeError) as exc:
            self.forget_client(client)
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def warm(self) -> None:
        """Build the client and start its connection, so the commit later does not wait for it.

        Only kicks the channel (no waiting, no watcher thread).  A channel already in
        TRANSIENT_FAILURE is dropped so the commit gets a new one instead of waiting out a
        reconnect backoff.
        """
        client = self.client()
        try:
            channel = client._firestore_api._transport.grpc_channel
            state = channel._channel.check_connectivity_state(True)
        except Exception:  # an optimisation only: the commit reports real errors
            return
        if state == _TRANSIENT_FAILURE:
            self.forget_client(client)

    def commit(self, record: UsageRecord, *, spooled: bool = False) -> bool:
        """Create the record and add its counters in one commit.

        Returns False when the record already exists: then nothing was applied (the create
        comes first in the batch), so a retried record is never counted twice.
        """

        def run(client: Any) -> None:
            doc = dict(record.fields)
            if spooled:  # the server time of a late write is not the request's time
                doc["ts"] = record.time
                doc["spooled"] = True
                doc["written_at"] = firestore.SERVER_TIMESTAMP
            else:
                doc["ts"] = firestore.SERVER_TIMESTAMP
            daily: dict[str, Any] = {
                "principal": record.principal,
                "service": record.service,
                "day": record.day,
                "updated": firestore.SERVER_TIMESTAMP,
            }
            for name, value in record.increments.items():
                daily[name] = firestore.Increment(value)
            batch = client.batch()
            batch.create(client.collection(self.usage_name).document(record.request_id), doc)
            batch.set(
                client.collection(self.daily_name).document(record.daily_id), daily, merge=True
            )
            batch.commit(retry=None, timeout=self.settings.write_timeout_s)

        try:
            self._call(run)
        except gexc.AlreadyExists:
            return False
        return True

    def daily_images(self, principal: str, day: str) -> int:
        def run(client: Any) -> int:
            query = (
                client.collection(self.daily_name)
                .where(filter=firestore.FieldFilter("principal", "==", principal))
                .where(filter=firestore.FieldFilter("day", "==", day))
            )
            total = 0
            for snap in query.stream(retry=None, timeout=self.settings.read_timeout_s):
                total += int((snap.to_dict() or {}).get("images") or 0)
            return total

        return self._call(run)

    def quota_override(self, principal: str) -> tuple[bool, int | None]:
        def run(client: Any) -> tuple[bool, int | None]:
            ref = client.collection(self.quotas_name).document(quota_doc_id(principal))
            snap = ref.get(retry=None, timeout=self.settings.read_timeout_s)
            if not snap.exists:
                return False, None
            data = snap.to_dict() or {}
            if "daily_images" not in data:
                return False, None
            return True, parse_limit(data["daily_images"])

        return self._call(run)

    def records(
        self,
        since: str | None = None,
        principal: str | None = None,
        service: str | None = None,
        timeout_s: float = 60.0,
    ) -> Iterator[dict[str, Any]]:
        """Usage documents, filtered on the server by day (one-field index) and here by name."""
        client = self.client()
        query = client.collection(self.usage_name)
        if since:
            query = query.where(filter=firestore.FieldFilter("day", ">=", since))
        for snap in query.stream(timeout=timeout_s):
            doc = snap.to_dict() or {}
            if principal is not None and doc.get("principal") != principal:
                continue
            if service is not None and doc.get("service") != service:
                continue
            yield doc
