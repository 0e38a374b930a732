"""Drive a usage recorder the way the REST layer does, for in-process tests."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from helpers import in_threads

from gateway.catalog import parse_config
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.usage import build_usage


def make_recorder(raw: dict[str, Any]):
    return build_usage(parse_config(raw))


def daily_counters(client, principal: str, service: str, day: str, prefix: str = "") -> dict:
    """A Firestore day's counters as a reader sums them: the day's document and its shards."""
    from gateway.usage.records import COUNTERS, daily_doc_id

    ref = client.collection(f"{prefix}usage_daily").document(daily_doc_id(principal, service, day))
    snap = ref.get()
    assert snap.exists, f"no usage_daily document for {principal}"
    data = snap.to_dict()
    out = {k: data.get(k) for k in ("principal", "service", "day")}
    for name in COUNTERS:
        out[name] = int(data.get(name) or 0)
    out["shards"] = 0
    for shard in ref.collection("shards").stream():
        out["shards"] += 1
        for name in COUNTERS:
            out[name] += int(shard.to_dict().get(name) or 0)
    return out


def serve(
    recorder,
    *,
    principal: str = "anonymous",
    auth_method: str = "none",
    service: str = "eos",
    images: int = 1,
    status: int = 200,
    error_code: str | None = None,
    detections: int = 3,
) -> RequestContext:
    """One request through begin / check_quota / (pipeline) / finish; quota refusals too."""
    ctx = RequestContext(method="POST", path=f"/v1/services/{service}:detect")
    ctx.route = "detect"
    ctx.service = service
    ctx.principal = principal
    ctx.auth_method = auth_method
    try:
        recorder.begin(ctx)  # raises past requests_per_minute
        ctx.instances = images
        recorder.check_quota(ctx, images=images)
        ctx.image = {"bytes": 1234, "width": 64, "height": 48, "format": "jpeg"}
        ctx.threshold = 0.3
        if status < 400:
            ctx.tiles = images
            ctx.detections = detections * images
            ctx.backend_ms = 5.0
            ctx.backend_model = "eos"
            ctx.backend_version = "1"
        ctx.status = status
        ctx.error_code = error_code
    except GatewayError as exc:
        ctx.status = exc.status
        ctx.error_code = exc.code
        ctx.error_message = exc.message
        ctx.retry_after = exc.headers.get("Retry-After")  # type: ignore[attr-defined]
    finally:
        recorder.finish(ctx)
    return ctx


# --- a fleet of gateway processes and clients of one principal ------------------------------


@dataclass
class Answer:
    """One response as a client saw it."""

    status: int
    request_id: str | None
    latency_s: float
    at: float  # time.time() when it was answered
    instance: int


def post_image(url: str, body: bytes, key: str, timeout: float = 120.0) -> tuple[int, str | None]:
    """(status, X-Request-Id) of one detect request with an API key; no exception on errors."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "image/jpeg", "X-API-Key": key}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            resp.read()
            return resp.status, resp.headers.get("X-Request-Id")
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code, exc.headers.get("X-Request-Id")


def run_clients(
    urls: list[str],
    clients: int,
    body: bytes,
    key: str,
    *,
    until_refused: bool = False,
    requests_each: int | None = None,
    max_each: int = 10_000,
) -> list[Answer]:
    """``clients`` threads of one principal, client ``i`` on instance ``i % len(urls)``.

    Each sends back to back: until it is refused (429) with ``until_refused``, or
    ``requests_each`` requests.  Every answer is returned, in no particular order.
    """
    answers: list[Answer] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        instance = i % len(urls)
        for _ in range(requests_each or max_each):
            start = time.perf_counter()
            status, rid = post_image(urls[instance], body, key)
            answer = Answer(status, rid, time.perf_counter() - start, time.time(), instance)
            with lock:
                answers.append(answer)
            if until_refused and status == 429:
                return

    errors = in_threads(client, clients, timeout_s=600)
    if errors:
        raise errors[0]
    return answers
