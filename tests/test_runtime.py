"""The configuration is read and checked when the process starts: a bad one stops the
start with a clear message and a non-zero exit, never an instance answering errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import requests
from helpers import sha
from procs import child_pids, free_port, start_gateway

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


def _key(secret: str) -> dict:
    return {"id": secret, "sha256": sha(secret)}


def _admits(port: int, key: str) -> int:
    """The status of a request with an API key: 404 (unknown service) once admitted."""
    resp = requests.post(
        f"http://127.0.0.1:{port}/v1/services/nope:detect", headers={"X-API-Key": key}, timeout=30
    )
    return resp.status_code



def _new_workers(arbiter: int, old: set[int], count: int) -> set[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = child_pids(arbiter) - old
        if len(new) >= count:
            time.sleep(1.0)  # booted: each worker reloads before it accepts
            return new
        time.sleep(0.2)
    raise AssertionError(f"no new workers after the signal: {sorted(child_pids(arbiter))}")


def test_a_reload_that_cannot_read_the_file_keeps_the_last_good_configuration(tmp_path):
    """SIGHUP with a file that is not UTF-8 (then not JSON, then of a wrong shape): the
    gateway keeps serving the last good configuration, on the reload and on a worker
    respawned later, with an ERROR line; a good file is served at the next SIGHUP."""
    config = tmp_path / "gateway-config.json"
    gw = start_gateway(
        {"auth": {"api_keys": [_key("first")]}, "usage": {"enabled": False}},
        env={"WORKERS": "2", "THREADS": "2"},
        workdir=tmp_path,
    )
    try:
        workers = _new_workers(gw.pid, set(), 2)
        config.write_text(json.dumps({"auth": {"api_keys": [_key("second")]}}))
        os.kill(gw.pid, signal.SIGHUP)
        workers = _new_workers(gw.pid, workers, 2)
        assert (_admits(gw.port, "first"), _admits(gw.port, "second")) == (401, 404)
        for bad in (b'{"auth": "\xff"}', b"{not json", b'{"limits": {"max_pixels": NaN}}'):
            config.write_bytes(bad)
            os.kill(gw.pid, signal.SIGHUP)
            workers = _new_workers(gw.pid, workers, 2)
            assert gw.running
            assert (_admits(gw.port, "first"), _admits(gw.port, "second")) == (401, 404)
        os.kill(sorted(workers)[0], signal.SIGKILL)  # a worker respawned with the file bad
        workers |= _new_workers(gw.pid, workers, 1)
        for _ in range(6):  # both workers answer, whichever takes the connection
            assert (_admits(gw.port, "first"), _admits(gw.port, "second")) == (401, 404)
        log = gw.log_text()
        assert "configuration not reloaded, the last good one is kept" in log
        assert "Traceback" not in log
        config.write_text(json.dumps({"auth": {"api_keys": [_key("third")]}}))
        os.kill(gw.pid, signal.SIGHUP)
        _new_workers(gw.pid, workers, 2)
        assert (_admits(gw.port, "second"), _admits(gw.port, "third")) == (401, 404)
    finally:
        gw.stop()


def run_to_exit(proc) -> tuple[int, str]:
    out = subprocess.run(
        proc.argv, cwd=proc.cwd, env=proc.env, capture_output=True, text=True, timeout=120
    )
    return out.returncode, out.stdout + out.stderr


def test_a_yaml_error_stops_the_start_naming_the_file_and_line_once():
    proc = start_gateway({}, start=False)
    path = proc.cwd / "gateway.yaml"
    path.write_text("services:\n  eos:\n    threshold: 0.3\n   labels: [eos]\n")
    proc.env["GATEWAY_CONFIG"] = str(path)
    status, text = run_to_exit(proc)
    assert status != 0 and "Traceback" not in text
    assert f"{path}, line 4, column 4: invalid YAML" in text
    assert text.count(str(path)) == 1 and text.count("line 4") == 1, text


def test_auth_that_admits_no_one_stops_the_start():
    status, text = run_to_exit(start_gateway({"auth": {}}, start=False))
    assert status != 0 and "auth is empty" in text


def test_the_start_log_names_the_address_and_each_backend():
    """Protocol and host only: a URL's user, password and query never reach the log."""
    model_port = free_port()
    config = {
        "services": {
            "eos": {},
            "far": {"backend": {"url": f"http://lab:s3cret@127.0.0.1:{model_port}/p?tok=abc"}},
        },
        "usage": {"enabled": False},
    }
    gw = start_gateway(config)
    try:
        status, doc = get(gw.url + "/readyz")
        assert (status, doc["services"]["far"]["reason"]) == (503, "unreachable")
    finally:
        gw.stop()
    lines = [json.loads(line) for line in gw.log_text().splitlines() if line.startswith("{")]
    ready = next(line for line in lines if line["message"].startswith("gateway ready"))
    assert ready["backends"] == {
        "eos": "the embedded detector",
        "far": f"tfserving http://127.0.0.1:{model_port}",
    }
    listening = [line for line in lines if line["message"].startswith("listening on")]
    assert [line["address"] for line in listening] == [gw.url]
    text = gw.log_text()
    assert "s3cret" not in text and "tok=abc" not in text
