"""gunicorn's own refusals (a malformed request line, oversized headers) as the gateway's
JSON errors.

gunicorn answers requests it cannot parse before the application sees them, with an
HTML page and no CORS headers.  The worker (``gateway.serving``) answers them with the
one error body every route uses instead.  The request's ``Origin`` cannot be read from a
head that did not parse, so a gateway with CORS origins answers these with
``Access-Control-Allow-Origin: *``: the body says only what was wrong with the request.
"""

from __future__ import annotations

from typing import Any

from gateway.context import new_request_id
from gateway.jsonio import dumps

_REASONS = {
    400: "Bad Request",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
}


def refusal(exc: BaseException) -> tuple[int, str, str] | None:
    """(status, code, message) for a request gunicorn could not parse; None otherwise."""
    from gunicorn.http import errors as e

    name = type(exc).__name__
    if isinstance(exc, e.LimitRequestHeaders):
        return 431, "headers_too_large", "the request headers are too large"
    if isinstance(exc, e.LimitRequestLine):
        return 414, "uri_too_long", "the request line is too long"
    if hasattr(e, "ExpectationFailed") and isinstance(exc, e.ExpectationFailed):
        return 417, "expectation_failed", "the only expectation understood is 100-continue"
    if hasattr(e, "UnsupportedTransferCoding") and isinstance(exc, e.UnsupportedTransferCoding):
        return (
            501,
            "unsupported_transfer_coding",
            "the only transfer coding understood is chunked",
        )
    parse_errors = tuple(
        getattr(e, n)
        for n in (
            "InvalidRequestLine",
            "InvalidRequestMethod",
            "InvalidHTTPVersion",
            "InvalidHeader",
            "InvalidHeaderName",
            "ObsoleteFolding",
            "InvalidSchemeHeaders",
            "InvalidChunkSize",
            "ChunkMissingTerminator",
            "InvalidChunkExtension",
            "InvalidProxyLine",
            "InvalidProxyHeader",
            "ForbiddenProxyRequest",
            "InvalidH2CPreface",
        )
        if hasattr(e, n)
    )
    if isinstance(exc, parse_errors):
        return 400, "bad_request", f"the request is malformed ({name})"
    return None


def response_bytes(status: int, code: str, message: str, cors: bool) -> tuple[bytes, str]:
    """The whole HTTP answer, closing the connection, and its request id."""
    request_id = new_request_id()
    body = dumps({"error": message, "code": code, "request_id": request_id})
    head = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Bad Request')}",
        "Connection: close",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        f"X-Request-Id: {request_id}",
    ]
    if cors:
        head += ["Access-Control-Allow-Origin: *", "Access-Control-Expose-Headers: X-Request-Id"]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body, request_id


def wsgi_answer(status: int, code: str, message: str) -> tuple[str, list, bytes]:
    """(status line, headers, body) of a refusal the worker answers through the WSGI app."""
    data, request_id = response_bytes(status, code, message, cors_configured())
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [
        tuple(line.split(": ", 1)) for line in lines[1:] if not line.startswith("Connection:")
    ]
    return lines[0].split(" ", 1)[1], headers, body


def cors_configured() -> bool:
    """Whether this process's gateway serves browsers from other origins."""
    try:
        from gateway.runtime import get_gateway

        cors: Any = get_gateway().cors
        return bool(cors.serves_browsers)
    except Exception:
        return False
