"""``/readyz`` and the Open Inference Protocol's readiness routes name why a service is not
ready (the class: ``unreachable``, ``model_not_available``...), never the model server's
own text, which goes to the logs."""

from __future__ import annotations

import json

import pytest
from procs import free_port
from raw_server import raw_server

from gateway import runtime
from gateway.catalog import parse_config
from gateway.context import RequestContext
from gateway.handlers import health, v2

SECRET = "the model server's own words: /opt/models/eos/1 missing"


@pytest.fixture
def gw():
    body = json.dumps({"error": SECRET}).encode()
    reply = (
        f"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    port, stop = raw_server(reply)
    raw = {
        "services": {
            "eos": {},
            "down": {"backend": {"url": f"http://127.0.0.1:{free_port()}", "retries": 0}},
            "gone": {"backend": {"url": f"http://127.0.0.1:{port}", "retries": 0}},
        },
        "usage": {"enabled": False},
    }
    yield runtime.build_gateway(parse_config(raw))
    stop.set()


def answer(response) -> tuple[int, dict]:
    return response.status_code, json.loads(response.get_data())


def ctx() -> RequestContext:
    return RequestContext(method="GET", path="/readyz")


def test_readyz_names_the_reason_of_each_service_that_is_not_ready(gw, capsys):
    status, doc = answer(health.readyz(gw, None, ctx()))
    assert (status, doc["code"]) == (503, "not_ready")
    services = doc["services"]
    assert services["eos"]["ready"] is True and services["eos"]["reason"] is None
    assert services["down"] == {
        "ready": False,
        "detail": "not ready",
        "reason": "unreachable",
        "model": "down",
        "version": None,
    }
    assert services["gone"]["reason"] == "model_not_available"
    assert "down (unreachable)" in doc["error"] and "gone (model_not_available)" in doc["error"]
    assert SECRET not in json.dumps(doc)
    logged = capsys.readouterr().out
    assert SECRET in logged and "model_not_available" in logged  # the text is for the logs


def test_the_v2_readiness_routes_name_the_reason(gw):
    status, doc = answer(v2.ready(gw, None, ctx()))
    assert (status, doc["ready"]) == (503, False)
    assert doc["reasons"] == {"down": "unreachable", "gone": "model_not_available"}
    status, doc = answer(v2.model_ready(gw, None, ctx(), "gone"))
    assert (status, doc["reason"], doc["name"]) == (503, "model_not_available", "gone")
    assert SECRET not in json.dumps(doc)
    status, doc = answer(v2.model_ready(gw, None, ctx(), "eos"))
    assert (status, doc) == (200, {"name": "eos", "ready": True})
