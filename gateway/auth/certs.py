"""Google's token-signing certificates, cached for as long as Google says they stay valid.

google-auth's ``verify_token`` downloads the certificates on every call; a gateway that did
the same would add a network round trip to every request and fail whenever googleapis.com
hiccups.  Here the certificate map is kept for its ``Cache-Control: max-age`` and a warm
cache verifies with no network call.  A token naming an unknown ``kid`` (keys rotate) may
cause one early re-download, but at most once per ``min_refetch_s``, so callers sending
made-up key ids cannot make the gateway fetch per request.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from gateway import logs
from gateway.backends import http_pool
from gateway.errors import AuthUnavailable

FIREBASE_CERTS_URL = (
    "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"
)
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"

_UNAVAILABLE = "token signing certificates are unavailable; try again shortly"
MAX_CERTS_BYTES = 1024 * 1024
MAX_AGE_CAP_S = 24 * 3600.0
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", re.IGNORECASE)


def cache_lifetime(cache_control: str | None, age: str | None, floor_s: float) -> float:
    """Seconds the response stays fresh: ``max-age`` minus ``Age``, kept within sane bounds.

    A missing or zero ``max-age`` still keeps the map ``floor_s`` seconds; otherwise a
    misbehaving endpoint would turn every verification into a download.
    """
    match = _MAX_AGE.search(cache_control or "")
    max_age = float(match.group(1)) if match else 0.0
    try:
        max_age -= max(0.0, float(age or 0))
    except ValueError:
        pass
    return min(max(max_age, floor_s), MAX_AGE_CAP_S)


def _http_get(url: str, timeout_s: float) -> tuple[bytes, dict[str, str]]:
    answer = http_pool.request(
        "GET",
        url,
        headers={"Accept": "application/json"},
        timeout=timeout_s,
        max_bytes=MAX_CERTS_BYTES,
    )
    if answer.status != 200:
        raise ValueError(f"the certificate endpoint answered HTTP {answer.status}")
    return answer.data, {k.lower(): v for k, v in answer.headers.items()}


class CertCache:
    """kid -> RS256 verifier for one certificate URL; safe to share between threads."""

    def __init__(
        self,
        url: str,
        *,
        min_refetch_s: float = 60.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        fetch: Callable[[str, float], tuple[bytes, dict[str, str]]] = _http_get,
    ) -> None:
        self.url = url
        self.min_refetch_s = min_refetch_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._fetch = fetch
        self._lock = threading.Lock()
        self._verifiers: dict[str, Any] = {}
        self._fresh_until = float("-inf")
        self._last_attempt = float("-inf")
        self.fetches = 0  # downloads attempted; read by tests and diagnostics

    def verifier(self, kid: str) -> Any | None:
        """The verifier for ``kid``, or None when Google does not (or no longer) publish it.

        Raises :class:`AuthUnavailable` only when no certificates were ever obtained.
        """
        now = self._clock()
        if now < self._fresh_until:
            found = self._verifiers.get(kid)
            if found is not None or now - self._last_attempt < self.min_refetch_s:
                return found
        with self._lock:
            now = self._clock()
            found = self._verifiers.get(kid)
            fresh = now < self._fresh_until
            if fresh and found is not None:
                return found
            if not self._verifiers:
                if now - self._last_attempt < 1.0:
                    raise AuthUnavailable(_UNAVAILABLE)
                self._refresh(now)
            elif not fresh or now - self._last_attempt >= self.min_refetch_s:
                self._refresh(now)
            return self._verifiers.get(kid)

    def _refresh(self, now: float) -> None:
        self._last_attempt = now
        self.fetches += 1
        try:
            body, headers = self._fetch(self.url, self.timeout_s)
            certs = json.loads(body)
            if not isinstance(certs, dict) or not certs:
                raise ValueError("certificate document is not a non-empty JSON object")
            verifiers = {str(kid): _rs256_verifier(pem) for kid, pem in certs.items()}
        except Exception as exc:  # network, JSON or PEM trouble: all mean "no new keys"
            logs.emit(
                "WARNING",
                "could not refresh token signing certificates",
                url=self.url,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
            if not self._verifiers:
                raise AuthUnavailable(_UNAVAILABLE) from None
            # Keep the previous keys, retry after min_refetch_s.
            self._fresh_until = now + self.min_refetch_s
            return
        lifetime = cache_lifetime(
            headers.get("cache-control"), headers.get("age"), floor_s=self.min_refetch_s
        )
        self._verifiers = verifiers
        self._fresh_until = now + lifetime


def _rs256_verifier(pem: Any) -> Any:
    if not isinstance(pem, str) or "-----BEGIN" not in pem:
        raise ValueError("certificate entry is not PEM text")
    from google.auth import crypt  # deferred: keeps google-auth out of cold starts

    return crypt.RSAVerifier.from_string(pem)
