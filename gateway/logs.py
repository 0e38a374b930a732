"""Structured log lines on stdout, as Cloud Logging reads them.

One access line per request and one line per error, each a JSON object with
``severity``, ``message``, ``request_id`` and ``httpRequest``; the trace id from
``X-Cloud-Trace-Context`` or ``traceparent`` goes into ``logging.googleapis.com/trace``
so a request's lines are grouped in the console.  Locally (``LOG_FORMAT=text``, or
stdout a terminal) the same facts print as one readable line.  Tokens, API keys and
image bytes never reach a log line.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from typing import Any

from gateway.codecs.jsonio import dumps
from gateway.context import RequestContext

_write_lock = threading.Lock()
_TRACE_CTX = re.compile(r"^([0-9a-fA-F]{32})(?:/\d+)?(?:;o=\d)?$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def text_format() -> bool:
    fmt = os.environ.get("LOG_FORMAT", "").lower()
    if fmt:
        return fmt == "text"
    try:
        return sys.stdout.isatty()
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


def emit(severity: str, message: str, **fields: Any) -> None:
    """Write one log line; never raises (logging must not fail a request)."""
    try:
        if text_format():
            extras = " ".join(
                f"{k}={v}" for k, v in fields.items() if v is not None and k != "httpRequest"
            )
            http = fields.get("httpRequest")
            if http:
                extras = (
                    f"{http.get('requestMethod')} {http.get('requestUrl')} "
                    f"{http.get('status')} {http.get('latency')} " + extras
                )
            line = f"{severity:<7} {message} {extras}".rstrip() + "\n"
        else:
            record = {"severity": severity, "message": message}
            record.update({k: v for k, v in fields.items() if v is not None})
            line = dumps(record).decode() + "\n"
        with _write_lock:
            sys.stdout.write(line)
            sys.stdout.flush()
    except Exception:  # pragma: no cover - a broken stdout must not break requests
        pass


def _trace_fields(ctx: RequestContext) -> dict[str, Any]:
    if not ctx.trace:
        return {}
    project = _project()
    trace = f"projects/{project}/traces/{ctx.trace}" if project else ctx.trace
    return {"logging.googleapis.com/trace": trace}


def access(ctx: RequestContext, remote_ip: str | None = None) -> None:
    latency_s = ctx.elapsed_ms() / 1000.0
    severity = "ERROR" if ctx.status >= 500 else "WARNING" if ctx.status >= 400 else "INFO"
    emit(
        severity,
        f"{ctx.method} {ctx.path} {ctx.status}",
        request_id=ctx.request_id,
        service=ctx.service,
        principal=ctx.principal,
        route=ctx.route,
        error_code=ctx.error_code,
        detections=ctx.detections if ctx.route in ("predict", "detect") else None,
        tiles=ctx.tiles or None,
        httpRequest={
            "requestMethod": ctx.method,
            "requestUrl": ctx.path,
            "status": ctx.status,
            "requestSize": str(ctx.body_bytes),
            "responseSize": str(ctx.response_bytes),
            "latency": f"{latency_s:.3f}s",
            "userAgent": ctx.user_agent,
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
