"""ID tokens the gateway presents to a private backend (``backend.auth: google-id-token``).

A token is fetched once and reused until shortly before it expires (Google ID tokens live
an hour), so requests never wait on the metadata server or the token endpoint except for the
one that happens to refresh; while a refresh is under way, other threads keep using the
still-valid token.  A failed refresh keeps serving the old token while it lasts and is not
retried for a few seconds, so an unreachable metadata server cannot add its timeouts to
every request.
"""

from __future__ import annotations

import base64
import calendar
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from gateway import logs
from gateway.errors import BackendUnavailable


def _token_exp(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verification (it is our own token)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp")
        return float(exp) if isinstance(exp, (int, float)) else None
    except (IndexError, ValueError, AttributeError):
        return None


class IdTokenSource:
    """``Authorization`` header values carrying a Google ID token for ``audience``.

    Credentials come from ``credentials_file`` (a service-account key) when given, else from
    ``GOOGLE_APPLICATION_CREDENTIALS`` or the metadata server (on Google Cloud), as google-auth's
    ``fetch_id_token_credentials`` finds them.  Nothing is fetched before the first call.
    """

    def __init__(
        self,
        audience: str,
        credentials_file: str | None = None,
        *,
        refresh_margin_s: float = 300.0,
        retry_after_failure_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.audience = audience
        self.credentials_file = credentials_file
        self.refresh_margin_s = refresh_margin_s
        self.retry_after_failure_s = retry_after_failure_s
        self._clock = clock
        self._lock = threading.Lock()
        self._credentials: Any = None
        self._transport: Any = None
        self._token: str | None = None
        self._expires_at = 0.0
        self._refresh_at = 0.0
        self._failed_until = 0.0
        self.refreshes = 0  # successful fetches; for tests and diagnostics

    def authorization_header(self) -> str:
        return "Bearer " + self.token()

    def token(self) -> str:
        now = self._clock()
        token = self._token
        if token is not None and now < self._refresh_at:
            return token
        usable = token is not None and now < self._expires_at - 10
        if not self._lock.acquire(blocking=not usable):
            return token  # another thread is refreshing; the current token is still good
        try:
            now = self._clock()
            if self._token is not None and now < self._refresh_at:
                return self._token
            usable = self._token is not None and now < self._expires_at - 10
            if now < self._failed_until:
                if usable:
                    return self._token
                raise _unavailable()
            try:
                self._refresh(now)
            except Exception as exc:  # transport, credentials, malformed answers
                self._failed_until = now + self.retry_after_failure_s
                logs.emit(
                    "WARNING",
                    "could not obtain an ID token for the backend",
                    audience=self.audience,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
                if usable:
                    return self._token
                raise _unavailable() from None
            return self._token
        finally:
            self._lock.release()

    def _refresh(self, now: float) -> None:
        if self._transport is None:
            # Deferred: google-auth is loaded only by services that send tokens.
            from gateway.backends.google_transport import Request

            self._transport = Request()
        if self._credentials is None:
            self._credentials = self._make_credentials()
        self._credentials.refresh(self._transport)
        token = self._credentials.token
        if not isinstance(token, str) or not token:
            raise ValueError("the credentials returned no ID token")
        expiry = self._credentials.expiry  # naive UTC datetime in google-auth
        expires_at = calendar.timegm(expiry.utctimetuple()) if expiry else _token_exp(token)
        if expires_at is None:
            raise ValueError("the ID token has no expiry")
        lifetime = expires_at - now
        margin = min(self.refresh_margin_s, max(lifetime / 2, 0))
        self._token = token
        self._expires_at = expires_at
        self._refresh_at = expires_at - margin
        self.refreshes += 1

    def _make_credentials(self) -> Any:
        if self.credentials_file:
            from google.oauth2 import service_account

            return service_account.IDTokenCredentials.from_service_account_file(
                self.credentials_file, target_audience=self.audience
            )
        from google.oauth2 import id_token

        return id_token.fetch_id_token_credentials(self.audience, request=self._transport)


def _unavailable() -> BackendUnavailable:
    return BackendUnavailable(
        "the gateway could not obtain credentials for the backend; try again shortly",
        code="backend_auth_failed",
    )
