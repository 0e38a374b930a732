"""One usage record per request, built from the RequestContext, and the ids it is filed under.

A record is plain JSON-able data so the same object can be committed to Firestore, written
to SQLite, logged as a structured line and kept in the spool.  It never holds image bytes,
tokens, API keys or client addresses: only what the context says about the request.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.context import RequestContext

# Characters kept as they are in document ids; everything else (including '/', '_' and '%')
# is percent-encoded per UTF-8 byte, so '__' only ever appears as the separator.
_SAFE_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789@.:+-")
_MAX_ID_BYTES = 1500  # Firestore's limit for a document id
# Per principal, service and day.  ``detections`` is every detection answered; it is
# ``counted`` (at or above the threshold the answer used) plus ``raw_detections`` (answered
# uncut, at any score: TF Serving's ``:predict`` and V2 ``infer`` without a threshold).
COUNTERS = ("requests", "errors", "images", "tiles", "detections", "counted", "raw_detections")
# Routes whose answer is uncut without a threshold: records written before ``counted`` and
# ``raw_detections`` were kept apart are read by them (see :func:`detection_counts`).
TENSOR_ROUTES = frozenset({"predict", "v2_infer"})


def escape_id_part(value: str) -> str:
    """A deterministic, reversible encoding that is safe inside a Firestore document id."""
    out: list[str] = []
    for ch in value:
        if ch in _SAFE_ID_CHARS:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out) or "%00"


def daily_doc_id(principal: str, service: str, day: str) -> str:
    """``<principal>__<service>__<YYYY-MM-DD>`` with both names escaped (see docs/usage.md)."""
    doc_id = f"{escape_id_part(principal)}__{escape_id_part(service)}__{day}"
    if len(doc_id.encode()) > _MAX_ID_BYTES:  # only absurdly long principals get here
        digest = hashlib.sha256(f"{principal}\0{service}".encode()).hexdigest()
        doc_id = f"sha256-{digest}__{day}"
    return doc_id


def quota_doc_id(principal: str) -> str:
    doc_id = escape_id_part(principal)
    if len(doc_id.encode()) > _MAX_ID_BYTES:
        doc_id = "sha256-" + hashlib.sha256(principal.encode()).hexdigest()
    return doc_id


def ledger_id(principal: str, kind: str, window: str) -> str:
    """The allowance ledger of a principal's ``images`` per day or ``requests`` per minute."""
    doc_id = f"{escape_id_part(principal)}__{kind}__{window}"
    if len(doc_id.encode()) > _MAX_ID_BYTES:
        doc_id = f"sha256-{hashlib.sha256(principal.encode()).hexdigest()}__{kind}__{window}"
    return doc_id


def utc_day(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d")


def seconds_until_utc_day_end(now: datetime | None = None) -> int:
    """For ``Retry-After``: whole seconds until the next UTC midnight, at least 1."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((midnight - now).total_seconds()))


@dataclass(frozen=True)
class UsageRecord:
    """A request's record plus the daily counters it adds, filed under ``request_id``."""

    request_id: str
    time: datetime  # when the request was recorded (UTC); Firestore's ``ts`` is server time
    principal: str
    service: str
    fields: dict[str, Any]  # the record as stored, without ``ts``
    increments: dict[str, int]  # requests, errors, images, tiles, detections

    @property
    def day(self) -> str:
        return utc_day(self.time)

    @property
    def daily_id(self) -> str:
        return daily_doc_id(self.principal, self.service, self.day)

    @property
    def images(self) -> int:
        return self.increments["images"]

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "time": self.time.isoformat(),
            "principal": self.principal,
            "service": self.service,
            "fields": self.fields,
            "increments": self.increments,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UsageRecord:
        """A record as :meth:`to_json` wrote it, by this version or an older one: a record
        from before ``counted`` and ``raw_detections`` gets them from what it holds."""
        fields = dict(data["fields"])
        increments = {k: int(v) for k, v in data["increments"].items()}
        counted, raw = detection_counts(fields)
        fields.setdefault("counted", counted)
        fields.setdefault("raw_detections", raw)
        increments.setdefault("counted", counted)
        increments.setdefault("raw_detections", raw)
        return cls(
            request_id=str(data["request_id"]),
            time=datetime.fromisoformat(data["time"]),
            principal=str(data["principal"]),
            service=str(data["service"]),
            fields=fields,
            increments=increments,
        )


def detection_counts(fields: dict[str, Any]) -> tuple[int, int]:
    """(counted, raw_detections) of a stored record, old ones included.

    A record written before the two were kept apart has only ``detections``: on a tensor
    route (``predict``, ``v2_infer``) at threshold 0 or none they were the uncut answer,
    otherwise a count at the record's threshold.
    """
    if fields.get("counted") is not None or fields.get("raw_detections") is not None:
        return int(fields.get("counted") or 0), int(fields.get("raw_detections") or 0)
    detections = int(fields.get("detections") or 0)
    if fields.get("route") in TENSOR_ROUTES and not fields.get("threshold"):
        return 0, detections
    return detections, 0


def counted_images(ctx: RequestContext) -> int:
    """Images charged to the caller: those of a request that was answered successfully."""
    return max(0, int(ctx.instances)) if ctx.status < 400 else 0


def record_from_context(
    ctx: RequestContext, now: datetime | None = None, service: str | None = None
) -> UsageRecord:
    """The record of ``ctx``; ``service`` replaces the name in the URL (``-`` for one that
    is not configured, so a made-up name never becomes a counter document).

    The principal is kept whole: the quota is looked up under the same string.
    """
    now = now or datetime.now(UTC)
    principal = ctx.principal or "anonymous"
    service = service or ctx.service or "-"
    image = ctx.image or {}
    failed = ctx.status >= 400
    fields: dict[str, Any] = {
        "request_id": ctx.request_id,
        "day": utc_day(now),
        "principal": principal,
        "auth_method": ctx.auth_method,
        "service": service,
        "route": ctx.route,
        "status": int(ctx.status),
        "error_code": ctx.error_code,
        "image": {
            "bytes": _int_or_none(image.get("bytes")),
            "width": _int_or_none(image.get("width")),
            "height": _int_or_none(image.get("height")),
            "format": str(image["format"]).lower() if image.get("format") else None,
        },
        "instances": int(ctx.instances),
        "images": counted_images(ctx),
        "tiles": int(ctx.tiles),
        "detections": int(ctx.detections),
        "counted": 0 if ctx.uncut else int(ctx.detections),
        "raw_detections": int(ctx.detections) if ctx.uncut else 0,
        "threshold": ctx.threshold,
        "latency_ms": {
            "total": round(ctx.elapsed_ms(), 1),
            "backend": round(float(ctx.backend_ms), 1),
        },
        "backend": {"model": ctx.backend_model, "version": ctx.backend_version},
    }
    increments = {
        "requests": 1,
        "errors": 1 if failed else 0,
        "images": fields["images"],
        "tiles": fields["tiles"],
        "detections": fields["detections"],
        "counted": fields["counted"],
        "raw_detections": fields["raw_detections"],
    }
    return UsageRecord(
        request_id=ctx.request_id,
        time=now,
        principal=principal,
        service=service,
        fields=fields,
        increments=increments,
    )


def _int_or_none(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
