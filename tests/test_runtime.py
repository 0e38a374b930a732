"""The configuration is read and checked when the process starts: a bad one stops the
start with a clear message and a non-zero exit, never an instance answering errors."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

import pytest
from procs import start_gateway

# Every test here runs the gateway (or the CLI) as its own process.
pytestmark = pytest.mark.process


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_bad_configuration_stops_the_start():
    proc = start_gateway({"services": {"eos": {"treshold": 0.4}}}, start=False)
    out = subprocess.run(
        proc.argv, cwd=proc.cwd, env=proc.env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "invalid configuration" in text and "unknown key 'treshold' in services.eos" in text
    assert "Traceback" not in text


def test_a_wrong_type_in_an_owned_section_stops_the_start():
    proc = start_gateway({"cors": {"origins": "https://a.example"}}, start=False)
    out = subprocess.run(
        proc.argv, cwd=proc.cwd, env=proc.env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0
    assert "cors.origins must be a list" in out.stdout + out.stderr


def test_not_ready_while_auth_fails_closed():
    """On Google Cloud without an auth section every model route answers 503: so does /readyz."""
    gw = start_gateway({"usage": {"enabled": False}}, env={"K_SERVICE": "eos-gateway"})
    try:
        status, doc = get(gw.url + "/readyz")
        assert (status, doc["code"]) == (503, "not_ready")
        assert doc["auth"]["ready"] is False and "auth" in doc["auth"]["detail"]
        assert doc["services"]["eos"]["ready"] is True
        assert get(gw.url + "/healthz")[0] == 200
    finally:
        gw.stop()
    ok = start_gateway({"usage": {"enabled": False}})
    try:
        status, doc = get(ok.url + "/readyz")
        assert (status, doc["status"]) == (200, "ready") and "auth" not in doc
    finally:
        ok.stop()
