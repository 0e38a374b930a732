"""API keys for scripts: only SHA-256 hashes are stored, in the config or in Firestore.

A leaked config file or database export therefore reveals no usable key.  Keys found in the
Firestore collection ``api_keys`` (document id = hex SHA-256 of the key, fields ``id`` and
``disabled``) are cached for ``cache_s`` seconds, misses included, so a script hammering
the gateway costs one read per minute rather than one per request, and each read has a
short deadline with no retries so an unreachable Firestore cannot stall requests.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway import logs
from gateway.errors import AuthUnavailable, Unauthenticated

COLLECTION = "api_keys"
MAX_KEY_CHARS = 512
_HEX64 = re.compile(r"[0-9a-f]{64}")


def key_hash(key: str) -> str:
    """The hex SHA-256 under which a key is stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def is_key_hash(value: Any) -> bool:
    return isinstance(value, str) and bool(_HEX64.fullmatch(value))


@dataclass(frozen=True)
class ApiKey:
    id: str
    sha256: str
    disabled: bool = False


class ApiKeyStore:
    """Resolves a presented key to its id, or raises :class:`Unauthenticated`."""

    def __init__(
        self,
        keys: list[ApiKey],
        *,
        firestore: Callable[[], Any] | None = None,
        cache_s: float = 60.0,
        timeout_s: float = 2.0,
        max_cached: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = tuple(keys)
        self._firestore = firestore
        self.cache_s = cache_s
        self.timeout_s = timeout_s
        self.max_cached = max_cached
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[float, ApiKey | None]] = OrderedDict()
        self.firestore_reads = 0  # for tests and diagnostics

    @property
    def uses_firestore(self) -> bool:
        return self._firestore is not None

    def lookup(self, key: str) -> str:
        if not key or len(key) > MAX_KEY_CHARS:
            raise Unauthenticated("invalid API key")
        digest = key_hash(key)
        found = None
        for entry in self.keys:  # every entry compared, in constant time each
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        if found is None and self._firestore is not None:
            found = self._from_firestore(digest)
        if found is None:
            raise Unauthenticated("invalid API key")
        if found.disabled:
            raise Unauthenticated("API key disabled")
        return found.id

    def _from_firestore(self, digest: str) -> ApiKey | None:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(digest)
            if hit is not None and hit[0] > now:
                return hit[1]
        entry = self._read(digest)
        with self._lock:
            self._cache[digest] = (now + self.cache_s, entry)
            self._cache.move_to_end(digest)
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return entry

    def _read(self, digest: str) -> ApiKey | None:
        assert self._firestore is not None
        self.firestore_reads += 1
        try:
            client = self._firestore()
            if client is None:
                return None
            snap = (
                client.collection(COLLECTION)
                .document(digest)
                .get(timeout=self.timeout_s, retry=None)
            )
        except Exception as exc:  # deadline, unavailable, permission: cannot decide now
            logs.emit("WARNING", "API key lookup in Firestore failed", error=type(exc).__name__)
            raise AuthUnavailable("could not check the API key right now; try again") from None
        if not snap.exists:
            return None
        data = snap.to_dict() or {}
        key_id = data.get("id")
        if not isinstance(key_id, str) or not key_id:
            logs.emit("WARNING", "a Firestore api_keys document has no 'id' field; ignored")
            return None
        if not hmac.compare_digest(snap.id, digest):
            return None
        return ApiKey(id=key_id, sha256=digest, disabled=bool(data.get("disabled", False)))
