"""Structured log lines on stdout, as Cloud Logging reads them.

One access line per request and one line per error, each a JSON object with
``severity``, ``message``, ``request_id`` and ``httpRequest``; the trace id from
``X-Cloud-Trace-Context`` or ``traceparent`` goes into ``logging.googleapis.com/trace``
so a request's lines are grouped in the console.  Locally (``LOG_FORMAT=text``, or
stdout a terminal) the same facts print as one readable line.  Tokens, API keys and
image bytes never reach a log line: only the principal (``key:<id>``, ``firebase:<uid>``,
``google:<email>``) and the sizes of bodies are written.

Cloud Logging links a line to its trace only when the trace field names the project
(``projects/<project>/traces/<id>``).  The project comes from ``GOOGLE_CLOUD_PROJECT``
(or ``GCP_PROJECT``); Cloud Functions (2nd gen) does not set it, and asking the metadata
server would cost a request at cold start, so the deploy guide sets it explicitly.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from typing import Any

from gateway.context import RequestContext
from gateway.errors import shorten
from gateway.jsonio import dumps

# Cloud Logging drops an entry over 256 KB, and with it the access line: every value a
# line holds is cut to this (a stack trace, written by the gateway, to STACK_MAX_CHARS).
FIELD_MAX_CHARS = 8192
STACK_MAX_CHARS = 65536
URL_MAX_CHARS = 2048  # the access line's URL (the request line is at most 8 KB)

_write_lock = threading.Lock()
_SEVERITIES = {"DEBUG": 100, "INFO": 200, "NOTICE": 300, "WARNING": 400, "ERROR": 500}
_stream: Any = None  # None: sys.stdout at the time of writing
_min_level = 0
_warned_no_project = False
_TRACE_CTX = re.compile(r"^([0-9a-fA-F]{32})(?:/\d+)?(?:;o=\d)?$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def configure(stream: Any = None, min_severity: str | None = None) -> None:
    """Where lines go and which are dropped; the CLI sends them to stderr, quieter."""
    global _stream, _min_level
    _stream = stream
    _min_level = _SEVERITIES.get((min_severity or "").upper(), 0)


def text_format() -> bool:
    fmt = os.environ.get("LOG_FORMAT", "").lower()
    if fmt:
        return fmt == "text"
    try:
        return (_stream or sys.stdout).isatty()
    except (AttributeError, ValueError):
        return False


def trace_id(headers: Any) -> str | None:
    """The trace id from ``X-Cloud-Trace-Context`` or W3C ``traceparent``, if well formed."""
    value = headers.get("X-Cloud-Trace-Context")
    if value:
        m = _TRACE_CTX.match(value.strip())
        if m:
            return m.group(1).lower()
    value = headers.get("traceparent")
    if value:
        m = _TRACEPARENT.match(value.strip().lower())
        if m and m.group(1) != "0" * 32:
            return m.group(1)
    return None


def _project() -> str | None:
    return os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCP_PROJECT")


def _warn_no_project() -> None:
    """Once per process on Google Cloud: traces cannot be linked without the project id."""
    global _warned_no_project
    if _warned_no_project or not os.environ.get("K_SERVICE"):
        return
    _warned_no_project = True
    emit(
        "WARNING",
        "GOOGLE_CLOUD_PROJECT is not set: log lines carry bare trace ids that Cloud Logging "
        "cannot link to traces; set it with --set-env-vars (see deploy/README.md)",
    )


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """Control characters as ``\\xNN``/``\\uNNNN``: a newline a caller put in a path, a
    principal or a header cannot start a log line of its own."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _text_line(severity: str, message: str, fields: dict[str, Any]) -> str:
    """``INFO    POST /v1/... 200 0.412s 1.2MB->3.4kB request_id=... principal=...``.

    One line per event whatever the request held: every value has its control characters
    escaped (a stack trace, written by the gateway itself, follows on lines of its own).
    """
    parts = [f"{severity:<7}", escape_controls(message)]
    http = fields.get("httpRequest")
    if http:
        parts.append(str(http.get("latency")))
        parts.append(f"{http.get('requestSize')}B->{http.get('responseSize')}B")
    for k, v in fields.items():
        if v is None or k in ("httpRequest", "stack_trace"):
            continue
        k = "trace" if k == "logging.googleapis.com/trace" else k
        parts.append(f"{k}={escape_controls(str(v))}")
    line = " ".join(parts)
    if fields.get("stack_trace"):
        line += "\n" + str(fields["stack_trace"]).rstrip()
    return line + "\n"


def emit(severity: str, message: str, **fields: Any) -> None:
    """Write one log line; never raises (logging must not fail a request)."""
    if _SEVERITIES.get(severity, 0) < _min_level:
        return
    try:
        message = shorten(message, FIELD_MAX_CHARS)
        for k, v in fields.items():
            if isinstance(v, str):
                fields[k] = shorten(v, STACK_MAX_CHARS if k == "stack_trace" else FIELD_MAX_CHARS)
        if text_format():
            line = _text_line(severity, message, fields)
        else:
            record = {"severity": severity, "message": message}
            record.update({k: v for k, v in fields.items() if v is not None})
            line = dumps(record).decode() + "\n"
        stream = _stream or sys.stdout
        with _write_lock:
            stream.write(line)
            stream.flush()
    except Exception:  # pragma: no cover - a broken stdout must not break requests
        pass


_emitted_once: set[str] = set()


def emit_once(severity: str, message: str) -> None:
    """A configuration notice, once per process however many requests meet it."""
    if message not in _emitted_once:
        _emitted_once.add(message)
        emit(severity, message)


def _trace_fields(ctx: RequestContext) -> dict[str, Any]:
    if not ctx.trace:
        return {}
    project = _project()
    if not project:
        _warn_no_project()
    trace = f"projects/{project}/traces/{ctx.trace}" if project else ctx.trace
    return {"logging.googleapis.com/trace": trace}


def access(ctx: RequestContext, remote_ip: str | None = None) -> None:
    latency_s = ctx.elapsed_ms() / 1000.0
    severity = "ERROR" if ctx.status >= 500 else "WARNING" if ctx.status >= 400 else "INFO"
    emit(
        severity,
        f"{shorten(ctx.method)} {shorten(ctx.path)} {ctx.status}",
        request_id=ctx.request_id,
        service=ctx.service,
        principal=ctx.principal,
        route=ctx.route,
        error_code=ctx.error_code,
        error=ctx.error_message if ctx.status >= 400 else None,
        detections=ctx.detections if ctx.route in ("predict", "detect", "vertex") else None,
        tiles=ctx.tiles or None,
        variant=ctx.variant,
        shadow=(ctx.shadow or {}).get("status"),
        httpRequest={
            "requestMethod": shorten(ctx.method),
            "requestUrl": shorten(ctx.path, URL_MAX_CHARS) if ctx.path else ctx.path,
            "status": ctx.status,
            "requestSize": str(ctx.body_bytes),
            "responseSize": str(ctx.response_bytes),
            "latency": f"{latency_s:.3f}s",
            "userAgent": shorten(ctx.user_agent, 512) if ctx.user_agent else ctx.user_agent,
            "remoteIp": remote_ip,
        },
        **_trace_fields(ctx),
    )


def error(ctx: RequestContext, message: str, exc_text: str | None = None) -> None:
    emit(
        "ERROR",
        message,
        request_id=ctx.request_id,
        service=ctx.service,
        principal=ctx.principal,
        error_code=ctx.error_code,
        stack_trace=exc_text,
        **_trace_fields(ctx),
    )


def backend_error(ctx: RequestContext, detail: str) -> None:
    """What the model server said, in full: the caller got the gateway's words only."""
    emit(
        "ERROR",
        "model server error",
        request_id=ctx.request_id,
        service=ctx.service,
        backend_error=detail,
        **_trace_fields(ctx),
    )
