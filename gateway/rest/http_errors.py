"""werkzeug's own refusals in the gateway's words.

Flask and werkzeug raise :class:`~werkzeug.exceptions.HTTPException` for input they refuse
while parsing: a multipart form with more than ``max_form_parts`` parts or a text field
over ``max_form_memory_size`` (413), a malformed form or header (400), an unknown path
(404).  Each becomes a :class:`~gateway.errors.GatewayError` with a stable code, so the
caller gets the one JSON error shape, never an HTML page or a 500.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import GatewayError

CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    414: "uri_too_long",
    431: "headers_too_large",
}

MESSAGES = {
    400: "the request is malformed",
    404: "no route for this path",
    405: "method not allowed",
    408: "the request body was not sent in time",
    413: "the request is too large (multipart forms: at most 1,000 parts and 500 kB in "
    "text fields; send the image as a file part)",
    414: "the URL is too long",
    431: "the request headers are too large",
}


def from_http_exception(exc: Any) -> GatewayError:
    """The gateway error for a werkzeug HTTPException (or anything with ``code``)."""
    status = int(getattr(exc, "code", None) or 500)
    if status < 400:
        status = 400
    code = CODES.get(status, "internal" if status >= 500 else "bad_request")
    message = (
        getattr(exc, "gateway_message", None)
        or MESSAGES.get(status)
        or str(getattr(exc, "name", "error")).lower()
    )
    return GatewayError(message, status=status, code=code)
