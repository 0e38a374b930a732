"""A refused request's body is never read into memory.

functions-framework reads the whole body after every response (``request.get_data()``,
so a client that returns early gets no connection error), which put a 400 MB body sent
without credentials into memory after its 401.  When the gateway answers without having
read the body, the body is marked as read (empty) for the framework.  The worker then
closes the connection instead of draining the rest (:mod:`gateway.slow_clients`).
"""

from __future__ import annotations

from typing import Any

# Set in the WSGI environ when the answer leaves the body unread: the worker then answers
# ``Connection: close`` (gateway.slow_clients), since it will close the connection.
CLOSE_CONNECTION = "gateway.close_connection"


def body_left_unread(request: Any) -> bool:
    """Whether the request announced a body that the gateway has not read to its end."""
    if getattr(request, "_cached_data", None) is not None:
        return False
    environ = request.environ
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if not chunked and not request.content_length:
        return False
    stream = request.stream
    return not getattr(stream, "is_exhausted", False)


def refuse_unread_body(request: Any) -> None:
    """Keep functions-framework from reading a body nobody needs."""
    try:
        if not body_left_unread(request):
            return
    except Exception:  # a broken stream: not reading it is the safe answer
        pass
    request._cached_data = b""  # what functions-framework reads after the response
    request.environ[CLOSE_CONNECTION] = True
