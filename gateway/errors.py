"""Errors that become JSON answers.

Every failure a client can cause or observe is a :class:`GatewayError` with an HTTP status
and a stable machine ``code``; the REST layer turns it into
``{"error", "code", "request_id"}``.  Anything else is a bug and is answered as a generic
500 without details, so no stack trace ever leaves the process.
"""

from __future__ import annotations

from typing import Any

# A caller's value quoted in an answer or a log line is cut to this: a path, a name or a
# header may be kilobytes long, and Cloud Logging drops an entry over 256 KB (the access
# line with it).
ECHO_MAX_CHARS = 200
MESSAGE_MAX_CHARS = 2000  # any error message, whatever it quotes


def shorten(text: str, limit: int = ECHO_MAX_CHARS) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis saying it was cut."""
    return text if len(text) <= limit else text[:limit] + "\u2026"


def echo(value: Any, limit: int = ECHO_MAX_CHARS) -> str:
    """A caller's value quoted (``repr``) in a message, at most ``limit`` characters of it."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + "\u2026"
    text = repr(value)
    return shorten(text, limit)


class GatewayError(Exception):
    status: int = 500
    code: str = "internal"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        detail: str | None = None,
    ) -> None:
        message = shorten(message, MESSAGE_MAX_CHARS)
        super().__init__(message)
        self.message = message
        self.detail = detail  # what the model server said: logged in full, never answered
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})
        # What the use case had learnt when it failed (gateway.context.Facts), for the
        # request's usage record and access log.
        self.facts: object | None = None


class BadRequest(GatewayError):
    status, code = 400, "bad_request"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class InvalidBase64(BadRequest):
    code = "invalid_base64"


class Unauthenticated(GatewayError):
    status, code = 401, "unauthenticated"

    def __init__(self, message: str = "missing or invalid credentials", **kw) -> None:
        super().__init__(message, **kw)
        self.headers.setdefault("WWW-Authenticate", 'Bearer realm="gateway"')


class Forbidden(GatewayError):
    status, code = 403, "forbidden"


class NotFound(GatewayError):
    status, code = 404, "not_found"


class UnknownService(NotFound):
    code = "unknown_service"


class UnknownVersion(NotFound):
    """A version the model server does not serve (TF Serving's NOT_FOUND)."""

    code = "unknown_version"


class UnknownLabel(BadRequest):
    """A version label the model server does not know (TF Serving's INVALID_ARGUMENT)."""

    code = "unknown_label"


class NoDefaultService(NotFound):
    code = "no_default_service"


class MethodNotAllowed(GatewayError):
    status, code = 405, "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status, code = 413, "payload_too_large"


class TooManyPixels(PayloadTooLarge):
    code = "too_many_pixels"


class UnsupportedImage(GatewayError):
    status, code = 415, "unsupported_image"


class UndecodableImage(GatewayError):
    status, code = 422, "undecodable_image"


class ImageTooComplex(UndecodableImage):
    """More JPEG scans or metadata segments than the limits allow: each costs a decoder
    time, so the CPU a request may take is bounded by refusing them before decoding."""

    code = "image_too_complex"


class QuotaExceeded(GatewayError):
    status, code = 429, "quota_exceeded"


class BackendBadResponse(GatewayError):
    status, code = 502, "backend_bad_response"


class BackendUnavailable(GatewayError):
    status, code = 503, "backend_unavailable"


class CredentialsUnavailable(BackendUnavailable):
    """The gateway could not obtain its own token for the backend (an ID or access token)."""


class ServiceMisconfigured(GatewayError):
    status, code = 503, "not_configured"


class AuthNotConfigured(ServiceMisconfigured):
    code = "auth_not_configured"


class AuthUnavailable(GatewayError):
    """Credentials could not be checked right now (certificates or key store unreachable)."""

    status, code = 503, "auth_unavailable"


class BackendTimeout(GatewayError):
    status, code = 504, "backend_timeout"
