"""Usage records, sharded daily counters, quota overrides and allowance ledgers in Firestore.

Imported only when Firestore is configured and first used, so a cold start that never
touches Firestore never pays for importing ``google.cloud.firestore``.

Every call passes no retry (``retry=None``, or :data:`NO_RETRY` for queries) and a
timeout: the client's default retry turns a short timeout against an unreachable server
into a wait of a minute.  After a failure the shared
client is dropped, because its gRPC channel can take many seconds to reconnect.

Counters follow Firestore's distributed-counter pattern: ``usage_daily/<id>`` holds the
names (``principal``, ``service``, ``day``) and the counters live in
``usage_daily/<id>/shards/<n>``, one shard (from the request id) per commit, so one busy
caller spreads its writes over ``usage.counter_shards`` documents.  Readers add the
shards and any counters on the day's document itself (written before counters were
sharded), so older days still count.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import firestore

from gateway import firestore_client
from gateway.usage.quotas import parse_limit
from gateway.usage.records import COUNTERS, UsageRecord, daily_doc_id, quota_doc_id
from gateway.usage.settings import UsageSettings
from gateway.usage.stores import StoreUnavailable

_TRANSIENT_FAILURE = 3  # grpc_connectivity_state in gRPC core
LEDGER_TTL = timedelta(days=2)  # ``expires`` of ledger entries, for a Firestore TTL policy
# Queries take a Retry that never retries rather than ``retry=None``: a stream that fails
# half-way asks its retry whether to resume, and None has nothing to ask.
NO_RETRY = Retry(predicate=lambda exc: False)


def shard_of(request_id: str, shards: int) -> int:
    """The shard a record's counters go to: spread evenly, and the same on every retry."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") % shards


class FirestoreStore:
    name = "Firestore"

    def __init__(self, settings: UsageSettings) -> None:
        assert settings.firestore is not None
        self.settings = settings
        self.target = settings.firestore
        names = settings.collections
        self.usage_name = names["usage"]
        self.daily_name = names["usage_daily"]
        self.quotas_name = names["quotas"]
        self.allowances_name = names["allowances"]
        project, database = self.target
        self.where = (
            f"firestore:{project or '(project of the runtime)'}/{database}/{self.usage_name}"
        )
        self._named: set[str] = set()  # usage_daily documents this process has given names
        self._named_lock = threading.Lock()

    def client(self) -> Any:
        try:
            return firestore_client.client_for(self.target)
        except Exception as exc:  # no credentials or project here: the store is unavailable
            raise StoreUnavailable(f"no Firestore client: {type(exc).__name__}: {exc}") from exc

    def forget_client(self, client: Any) -> None:
        firestore_client.discard_client(self.target, client)

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
        """Create the record and add its counters to one shard, in one commit.

        Returns False when the record already exists: then nothing was applied (the create
        comes first in the batch), so a retried record is never counted twice.  The day's
        document gets its names in the first commit of this process that touches it.
        """
        named = record.daily_id in self._named

        def run(client: Any) -> None:
            doc = dict(record.fields)
            if spooled:  # the server time of a late write is not the request's time
                doc["ts"] = record.time
                doc["spooled"] = True
                doc["written_at"] = firestore.SERVER_TIMESTAMP
            else:
                doc["ts"] = firestore.SERVER_TIMESTAMP
            names = {"principal": record.principal, "service": record.service, "day": record.day}
            shard: dict[str, Any] = {**names, "updated": firestore.SERVER_TIMESTAMP}
            for name, value in record.increments.items():
                shard[name] = firestore.Increment(value)
            daily = client.collection(self.daily_name).document(record.daily_id)
            n = shard_of(record.request_id, self.settings.counter_shards)
            batch = client.batch()
            batch.create(client.collection(self.usage_name).document(record.request_id), doc)
            if not named:
                batch.set(daily, names, merge=True)
            batch.set(daily.collection("shards").document(str(n)), shard, merge=True)
            batch.commit(retry=None, timeout=self.settings.write_timeout_s)

        try:
            self._call(run)
        except gexc.AlreadyExists:
            return False
        if not named:
            with self._named_lock:
                self._named.add(record.daily_id)
        return True

    def _sum_day(self, snap: Any) -> dict[str, int]:
        """A day's counters: its own fields (before sharding) plus every shard."""
        data = snap.to_dict() or {}
        total = {name: int(data.get(name) or 0) for name in COUNTERS}
        shards = snap.reference.collection("shards").stream(
            retry=NO_RETRY, timeout=self.settings.read_timeout_s
        )
        for shard in shards:
            fields = shard.to_dict() or {}
            for name in COUNTERS:
                total[name] += int(fields.get(name) or 0)
        return total

    def daily_images(self, principal: str, day: str) -> int:
        def run(client: Any) -> int:
            query = (
                client.collection(self.daily_name)
                .where(filter=firestore.FieldFilter("principal", "==", principal))
                .where(filter=firestore.FieldFilter("day", "==", day))
            )
            snaps = query.stream(retry=NO_RETRY, timeout=self.settings.read_timeout_s)
            return sum(self._sum_day(snap)["images"] for snap in snaps)

        return self._call(run)

    def day_totals(self, principal: str, day: str) -> list[dict[str, Any]]:
        def run(client: Any) -> list[dict[str, Any]]:
            query = (
                client.collection(self.daily_name)
                .where(filter=firestore.FieldFilter("principal", "==", principal))
                .where(filter=firestore.FieldFilter("day", "==", day))
            )
            rows = []
            for snap in query.stream(retry=NO_RETRY, timeout=self.settings.read_timeout_s):
                service = (snap.to_dict() or {}).get("service")
                rows.append({"principal": principal, "service": service, "day": day,
                             **self._sum_day(snap)})  # fmt: skip
            return sorted(rows, key=lambda r: str(r["service"]))

        return self._call(run)

    def daily(self, principal: str, service: str, day: str) -> dict[str, Any] | None:
        def run(client: Any) -> dict[str, Any] | None:
            ref = client.collection(self.daily_name).document(daily_doc_id(principal, service, day))
            snap = ref.get(retry=None, timeout=self.settings.read_timeout_s)
            total = self._sum_day(snap)
            if not snap.exists and not any(total.values()):
                return None
            return {"principal": principal, "service": service, "day": day, **total}

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

    def _entries(self, client: Any, ledger: str) -> Any:
        return client.collection(self.allowances_name).document(ledger).collection("entries")

    def append_entry(self, ledger: str, index: int, amount: int, meta: dict[str, Any]) -> bool:
        def run(client: Any) -> None:
            doc = {
                **meta,
                "index": index,
                "amount": amount,
                "at": firestore.SERVER_TIMESTAMP,
                "expires": datetime.now(UTC) + LEDGER_TTL,
            }
            ref = self._entries(client, ledger).document(f"{index:06d}")
            ref.create(doc, retry=None, timeout=self.settings.write_timeout_s)

        try:
            self._call(run)
        except gexc.AlreadyExists:
            return False
        return True

    def entries_after(self, ledger: str, index: int) -> list[tuple[int, int]]:
        def run(client: Any) -> list[tuple[int, int]]:
            query = (
                self._entries(client, ledger)
                .where(filter=firestore.FieldFilter("index", ">", index))
                .order_by("index")
            )
            out = []
            for snap in query.stream(retry=NO_RETRY, timeout=self.settings.read_timeout_s):
                data = snap.to_dict() or {}
                out.append((int(data["index"]), int(data["amount"])))
            return out

        return self._call(run)

    def records(
        self,
        since: str | None = None,
        principal: str | None = None,
        service: str | None = None,
        until: str | None = None,
        timeout_s: float = 60.0,
    ) -> Iterator[dict[str, Any]]:
        """Usage documents, filtered on the server by day (one-field index) and here by name."""
        client = self.client()
        query = client.collection(self.usage_name)
        if since:
            query = query.where(filter=firestore.FieldFilter("day", ">=", since))
        if until:
            query = query.where(filter=firestore.FieldFilter("day", "<=", until))
        for snap in query.stream(timeout=timeout_s):
            doc = snap.to_dict() or {}
            if principal is not None and doc.get("principal") != principal:
                continue
            if service is not None and doc.get("service") != service:
                continue
            yield doc
