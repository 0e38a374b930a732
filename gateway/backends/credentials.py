"""Tokens the gateway presents to a private backend: Google ID tokens
(``backend.auth: google-id-token``, Cloud Run) and OAuth 2.0 access tokens (Vertex AI).

A token is fetched once and reused until shortly before it expires (both kinds live an
hour), so requests never wait on the metadata server or the token endpoint except for the
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
from gateway.errors import CredentialsUnavailable


def _token_exp(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verification (it is our own token)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp")
        return float(exp) if isinstance(exp, (int, float)) else None
    except (IndexError, ValueError, AttributeError):
        return None


class _CachedToken:
    """A token from google-auth credentials, shared by threads and refreshed ahead of time;
    the subclasses say which credentials make it."""

    what = "a token"  # for the log line of a failed fetch
    error_code = "backend_unavailable"

    def __init__(
        self,
        credentials_file: str | None = None,
        *,
        refresh_margin_s: float = 300.0,
        retry_after_failure_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
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

    def invalidate(self, token: str | None = None) -> None:
        """Forget ``token`` (the current one when None) after the backend refused it, so
        the next call fetches another, unless a refresh has already replaced it."""
        with self._lock:
            if token is None or token == self._token:
                self._token = None
                self._refresh_at = 0.0
                self._expires_at = 0.0

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
                raise self._unavailable()
            try:
                self._refresh(now)
            except Exception as exc:  # transport, credentials, malformed answers
                self._failed_until = now + self.retry_after_failure_s
                logs.emit(
                    "WARNING",
                    f"could not obtain {self.what} for the backend",
                    **self._describe(),
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
                if usable:
                    return self._token
                raise self._unavailable() from None
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
            raise ValueError("the credentials returned no token")
        expiry = self._credentials.expiry  # naive UTC datetime in google-auth
        expires_at = calendar.timegm(expiry.utctimetuple()) if expiry else self._expiry(token, now)
        if expires_at is None:
            raise ValueError(f"{self.what} without an expiry")
        lifetime = expires_at - now
        margin = min(self.refresh_margin_s, max(lifetime / 2, 0))
        self._token = token
        self._expires_at = expires_at
        self._refresh_at = expires_at - margin
        self.refreshes += 1

    def _describe(self) -> dict[str, Any]:
        return {}

    def _expiry(self, token: str, now: float) -> float | None:
        """When a token whose credentials name no expiry expires."""
        return None

    def _make_credentials(self) -> Any:
        raise NotImplementedError

    def _unavailable(self) -> CredentialsUnavailable:
        return CredentialsUnavailable(
            "the gateway could not obtain credentials for the backend; try again shortly",
            code=self.error_code,
        )


class IdTokenSource(_CachedToken):
    """``Authorization`` header values carrying a Google ID token for ``audience``.

    Credentials come from ``credentials_file`` (a service-account key) when given, else from
    ``GOOGLE_APPLICATION_CREDENTIALS`` or the metadata server (on Google Cloud), as google-auth's
    ``fetch_id_token_credentials`` finds them.  Nothing is fetched before the first call.
    """

    what = "an ID token"
    error_code = "backend_auth_failed"

    def __init__(self, audience: str, credentials_file: str | None = None, **kw: Any) -> None:
        super().__init__(credentials_file, **kw)
        self.audience = audience

    def _describe(self) -> dict[str, Any]:
        return {"audience": self.audience}

    def _expiry(self, token: str, now: float) -> float | None:
        return _token_exp(token)

    def _make_credentials(self) -> Any:
        if self.credentials_file:
            from google.oauth2 import service_account

            return service_account.IDTokenCredentials.from_service_account_file(
                self.credentials_file, target_audience=self.audience
            )
        from google.oauth2 import id_token

        return id_token.fetch_id_token_credentials(self.audience, request=self._transport)


CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
# How long an access token is used when its credentials name no expiry (Google's do).
UNDATED_TOKEN_S = 300.0


class AccessTokenSource(_CachedToken):
    """``Authorization`` header values carrying an OAuth 2.0 access token for ``scopes``
    (Google APIs such as Vertex AI take these, not ID tokens).

    Credentials come from ``credentials_file`` (a service-account key) when given, else from
    Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's user
    credentials, the metadata server on Google Cloud).  Nothing is fetched before the first
    call; a token that cannot be had is a 503 ``backend_unavailable``.
    """

    what = "an access token"

    def __init__(
        self,
        credentials_file: str | None = None,
        scopes: tuple[str, ...] = (CLOUD_PLATFORM,),
        **kw: Any,
    ) -> None:
        super().__init__(credentials_file, **kw)
        self.scopes = scopes

    def _describe(self) -> dict[str, Any]:
        return {"scopes": " ".join(self.scopes)}

    def _expiry(self, token: str, now: float) -> float | None:
        return now + UNDATED_TOKEN_S

    def _make_credentials(self) -> Any:
        if self.credentials_file:
            from google.oauth2 import service_account

            return service_account.Credentials.from_service_account_file(
                self.credentials_file, scopes=list(self.scopes)
            )
        import google.auth

        credentials, _project = google.auth.default(
            scopes=list(self.scopes), request=self._transport
        )
        return credentials
