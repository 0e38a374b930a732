"""Variants over HTTP, against two model servers that disagree (the candidate's detector
assumes another cell size): the variant named in every answer, the shadow compared and
recorded, cut when its server holds past ``max_wait_ms``, and a promotion by SIGHUP with
no refused connection."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import REPO, b64
from process_guard import process_fixture
from procs import start_gateway, start_model_server

SLIDE = (REPO / "samples" / "slide.jpg").read_bytes()


@pytest.fixture(scope="module")
def control(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("candidate") / "control.json"
    path.write_text("{}")
    return path


@process_fixture(scope="module")
def models(control):
    current = start_model_server()
    try:
        candidate = start_model_server(control_file=control, extra=["--cell-size-px", "14"])
    except Exception:
        current.stop()
        raise
    yield current, candidate
    candidate.stop()
    current.stop()


def config(current, candidate, promoted: bool = False, max_wait_ms: int = 30_000) -> dict:
    weights = (0, 1) if promoted else (1, 0)
    return {
        "services": {
            "eos": {
                "variants": {
                    "current": {"url": current.url, "model": "eos", "weight": weights[0]},
                    "candidate": {"url": candidate.url, "model": "eos", "weight": weights[1]},
                },
                "shadow": {
                    "variant": "current" if promoted else "candidate",
                    "max_wait_ms": max_wait_ms,
                },
            }
        }
    }


@process_fixture(scope="module")
def gateway(models, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gateway")
    proc = start_gateway(config(*models), env={"WORKERS": "2", "THREADS": "4"}, workdir=workdir)
    proc.workdir = workdir
    yield proc
    proc.stop()


def post(gw, path: str, body: bytes, content_type: str = "image/jpeg"):
    req = urllib.request.Request(
        gw.url + path, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def comparisons(gw) -> list[dict]:
    db = sqlite3.connect(gw.workdir / ".gateway" / "usage.sqlite3")
    try:
        rows = db.execute("SELECT payload FROM usage_comparisons ORDER BY rowid").fetchall()
    finally:
        db.close()
    return [json.loads(r[0]) for r in rows]


def test_the_shadow_is_compared_and_the_answer_names_its_variant(gateway):
    status, headers, doc = post(gateway, "/v1/services/eos:detect", SLIDE)
    assert status == 200, doc
    assert doc["model"]["variant"] == "current"
    assert headers["X-Served-By"].startswith("current; model=eos")
    body = {"instances": [{"image_bytes": {"b64": b64(SLIDE)}, "key": "s"}]}
    status, headers, _ = post(
        gateway, "/v1/models/eos:predict", json.dumps(body).encode(), "application/json"
    )
    assert status == 200 and headers["X-Served-By"].startswith("current")
    first = comparisons(gateway)[0]
    assert first["shadow"]["status"] == "ok"
    (slide,) = first["slides"]
    assert slide["primary_count"] == doc["count"]
    assert slide["difference"] == slide["shadow_count"] - slide["primary_count"]
    assert slide["matched"] + slide["only_primary"] == slide["primary_count"]
    assert slide["matched"] + slide["only_shadow"] == slide["shadow_count"]


def reload(gateway, raw: dict, until) -> None:
    """The configuration rewritten and re-read (SIGHUP), until ``until()`` holds."""
    (gateway.workdir / "gateway-config.json").write_text(json.dumps(raw))
    os.kill(gateway.pid, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not until():
        time.sleep(0.2)
    assert until()


def shadow_wait(gateway) -> int:
    with urllib.request.urlopen(gateway.url + "/v1/services/eos", timeout=10) as resp:
        return json.loads(resp.read())["shadow"]["max_wait_ms"]


def test_a_shadow_held_past_max_wait_is_cut_and_the_answer_is_unchanged(
    gateway, models, control
):
    _, _, before = post(gateway, "/v1/services/eos:detect", SLIDE)
    reload(gateway, config(*models, max_wait_ms=300), lambda: shadow_wait(gateway) == 300)
    control.write_text(json.dumps({"hold": True}))
    try:
        status, _, doc = post(gateway, "/v1/services/eos:detect", SLIDE)
    finally:
        control.write_text("{}")
    assert status == 200
    assert doc["count"] == before["count"] and doc["detections"] == before["detections"]
    assert comparisons(gateway)[-1]["shadow"]["status"] == "cut"
    reload(gateway, config(*models), lambda: shadow_wait(gateway) == 30_000)


def test_sighup_promotes_the_candidate_without_refusing_connections(gateway, models):
    recorded = comparisons(gateway)[0]["slides"][0]
    refused: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                urllib.request.urlopen(gateway.url + "/healthz", timeout=10).read()
            except OSError as exc:
                refused.append(repr(exc))
            time.sleep(0.01)

    (gateway.workdir / "gateway-config.json").write_text(
        json.dumps(config(*models, promoted=True))
    )
    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        os.kill(gateway.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        served = None
        while time.monotonic() < deadline:
            status, headers, doc = post(gateway, "/v1/services/eos:detect", SLIDE)
            served = doc.get("model", {}).get("variant")
            if served == "candidate":
                break
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    assert served == "candidate"
    assert doc["count"] == recorded["shadow_count"]  # what it counted as the shadow
    assert refused == []
    latest = comparisons(gateway)[-1]
    assert latest["primary"]["variant"] == "candidate"
    assert latest["shadow"]["variant"] == "current"
