"""Client side of the reliability tests: request bodies, answer-shape checks, a bounded load
loop and the gateway's memory as the kernel sees it.

Everything here talks to real processes over loopback sockets; nothing is mocked.  Answers
are checked against the shapes clients rely on, so a 200 with a wrong body counts as a
failure just like a 5xx does.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from helpers import b64

from gateway.memory import IDLE_TRIM_AFTER_S

# --- memory ---------------------------------------------------------------------------------


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of every process in a process group (gunicorn master + workers)."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            statm = Path(f"/proc/{entry}/statm").read_text()
        except OSError:
            continue
        # Field 5 (pgrp) comes after the parenthesised command name, which may hold spaces.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            total += int(statm.split()[1]) * page
    return total


class RssSampler:
    """Samples a process group's RSS in the background; ``peak`` is the largest sample."""

    def __init__(self, pgid: int, interval_s: float = 0.2) -> None:
        self.pgid, self.interval_s = pgid, interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, group_rss_bytes(self.pgid))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def idle_rss_bytes(pgid: int, settle_s: float = 1.5, bound_s: float = 30.0) -> int:
    """RSS of an idle gateway: the lowest sample, once workers idle for
    ``IDLE_TRIM_AFTER_S`` have given freed memory back (gateway.memory) and no sample for
    ``settle_s`` went lower; on a busy machine that takes longer, up to ``bound_s``."""
    time.sleep(IDLE_TRIM_AFTER_S)
    lowest = group_rss_bytes(pgid)
    lowered = start = time.monotonic()
    while time.monotonic() - lowered < settle_s and time.monotonic() - start < bound_s:
        time.sleep(0.25)
        sample = group_rss_bytes(pgid)
        if sample < lowest:
            lowest, lowered = sample, time.monotonic()
    return lowest


# --- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request the load loop can send, and the statuses it may get outside faults."""

    name: str
    method: str
    path: str
    body: bytes
    content_type: str
    expect: frozenset[int]
    valid: bool = False  # a well-formed slide: latency counted, must be 200 outside faults


def predict_body(images: Iterable[bytes]) -> bytes:
    rows = [{"image_bytes": {"b64": b64(img)}, "key": str(i)} for i, img in enumerate(images)]
    return json.dumps({"instances": rows}).encode()


def predict_call(name: str, service: str, image: bytes, expect: set[int]) -> Call:
    return Call(
        name,
        "POST",
        f"/v1/models/{service}:predict",
        predict_body([image]),
        "application/json",
        frozenset(expect),
        valid=expect == {200},
    )


def detect_call(name: str, service: str, image: bytes, expect: set[int]) -> Call:
    return Call(
        name,
        "POST",
        f"/v1/services/{service}:detect",
        image,
        "application/octet-stream",
        frozenset(expect),
        valid=expect == {200},
    )


# --- answer shapes ----------------------------------------------------------------------------


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def shape_problem(path: str, status: int, body: bytes) -> str | None:
    """None when the answer has the pinned shape for its route and status, else why not."""
    try:
        doc = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:120]!r}"
    if not isinstance(doc, dict):
        return "not a JSON object"
    if status != 200 and path.startswith("/v1/projects/"):  # Google's API: its own shape
        err = doc.get("error")
        if not (
            isinstance(err, dict)
            and err.get("code") == status
            and isinstance(err.get("message"), str)
            and "request_id" in err["message"]
            and isinstance(err.get("status"), str)
            and err["status"]
        ):
            return f"error body not in Google's shape with a request id: {doc}"
        return None
    if status != 200:
        if not (
            isinstance(doc.get("error"), str)
            and doc["error"]
            and isinstance(doc.get("code"), str)
            and doc["code"]
            and isinstance(doc.get("request_id"), str)
            and doc["request_id"]
        ):
            return f"error body without error/code/request_id: {doc}"
        return None
    if path.endswith(":predict"):
        preds = doc.get("predictions")
        if not isinstance(preds, list) or not preds:
            return "no predictions list"
        for p in preds:
            n = p.get("num_detections")
            boxes, scores = p.get("detection_boxes"), p.get("detection_scores")
            if not (isinstance(n, int) and isinstance(boxes, list) and isinstance(scores, list)):
                return f"prediction fields missing: {sorted(p)}"
            if not (len(boxes) == len(scores) == n == len(p.get("detection_classes", []))):
                return "prediction lists of different lengths"
            for b in boxes:
                if not (len(b) == 4 and all(_is_num(v) and 0 <= v <= 1 for v in b)):
                    return f"bad normalized box {b}"
                if not (b[0] <= b[2] and b[1] <= b[3]):
                    return f"inverted box {b}"
            if not all(_is_num(s) and 0 <= s <= 1 for s in scores):
                return "score outside [0, 1]"
        return None
    if path.endswith(":detect"):
        dets, image = doc.get("detections"), doc.get("image")
        if not (isinstance(dets, list) and isinstance(image, dict)):
            return "detect answer without detections/image"
        if doc.get("count") != len(dets) or not isinstance(doc.get("request_id"), str):
            return "detect count or request_id wrong"
        w, h = image.get("width"), image.get("height")
        for d in dets:
            b = d.get("box")
            if not (isinstance(b, list) and len(b) == 4 and all(_is_num(v) for v in b)):
                return f"bad box {d}"
            if not (0 <= b[0] < b[2] <= w and 0 <= b[1] < b[3] <= h):
                return f"box {b} outside the {w}x{h} image"
            if not (_is_num(d.get("score")) and 0 <= d["score"] <= 1):
                return f"bad score {d}"
        return None
    return None


# --- sending ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    call: str
    path: str
    valid: bool
    started: float  # time.monotonic()
    latency_s: float
    status: int | None  # None: connection error
    error: str | None = None  # connection error or shape problem
    request_id: str | None = None
    code: str | None = None
    body: Any = None  # the parsed answer, when asked for


def send(port: int, call: Call, timeout_s: float = 30.0, keep_body: bool = False) -> Outcome:
    """One request on a fresh connection; never raises."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request(
            call.method,
            call.path,
            body=call.body,
            headers={"Content-Type": call.content_type, "Connection": "close"},
        )
        resp = conn.getresponse()
        body = resp.read()
        status = resp.status
        rid = resp.getheader("X-Request-Id")
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(
            call.name,
            call.path,
            call.valid,
            started,
            time.monotonic() - started,
            None,
            f"{type(exc).__name__}: {exc}",
        )
    finally:
        conn.close()
    latency = time.monotonic() - started
    problem = shape_problem(call.path, status, body)
    code = None
    if status != 200 and problem is None:
        code = json.loads(body)["code"]
    doc = json.loads(body) if keep_body and problem is None else None
    return Outcome(
        call.name, call.path, call.valid, started, latency, status, problem, rid, code, doc
    )


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, o: Outcome) -> None:
        with self.lock:
            self.outcomes.append(o)


def run_load(
    port: int,
    calls: list[Call],
    weights: list[float],
    clients: int,
    duration_s: float,
    seed: int = 0,
    timeout_s: float = 30.0,
    keep_going: Callable[[], bool] = lambda: False,
) -> LoadResult:
    """``clients`` threads sending weighted random calls back to back until ``duration_s``
    has passed and ``keep_going`` says no more (a fault schedule that a slow machine
    stretched past ``duration_s`` still has traffic to act on)."""
    result = LoadResult()
    end = time.monotonic() + duration_s

    def client(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        while time.monotonic() < end or keep_going():
            call = rng.choices(calls, weights)[0]
            result.add(send(port, call, timeout_s))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(duration_s + timeout_s + 10)
            if not keep_going() and time.monotonic() > end + timeout_s + 10:
                break
    return result


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else 0.0
