"""A gateway loads only the outbound protocol its configuration names: start-up and the
first ``:predict`` of a TF Serving gateway, or of one on the embedded detector, never
import the V2 client, and a V2 gateway never imports the TF Serving client.  Each case
is a fresh interpreter importing ``main`` (what a cold start pays for), answering one
``:predict`` through the functions-framework app, and listing the gateway's modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import GATEWAY_VARIABLES, REPO, b64, synthetic_slide
from procs import start_model_server

pytestmark = pytest.mark.process

# Run in the child: the modules after start-up, then after a first :predict.
CHILD = """
import json, sys

def loaded():
    return sorted(m for m in sys.modules if m == "gateway" or m.startswith("gateway."))

from functions_framework import create_app
app = create_app(target="gateway", source=sys.argv[1])
assert "main" in sys.modules, sorted(sys.modules)
at_start = loaded()
resp = app.test_client().post(
    "/v1/models/eos:predict", data=sys.stdin.buffer.read(), content_type="application/json"
)
print(json.dumps({"status": resp.status_code, "answer": resp.get_data(as_text=True)[:300],
                  "start": at_start, "first_predict": loaded()}))
"""

V2_CLIENT = ("gateway.backends.v2", "gateway.backends.v2_wire")
TFSERVING_CLIENT = "gateway.backends.tfserving"


@pytest.fixture(scope="module")
def model_server():
    """KServe's ModelServer hosting the project's detector: TF Serving's REST protocol and
    the Open Inference Protocol on one port."""
    server = start_model_server()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def body() -> bytes:
    image = synthetic_slide(320, 240, 2, seed=3, fmt="JPEG")
    return json.dumps({"instances": [{"image_bytes": {"b64": b64(image)}, "key": "k"}]}).encode()


def gateway_modules(tmp_path, body: bytes, config: dict | None) -> dict:
    """The child's report for ``config`` (None: no ``GATEWAY_CONFIG``, the embedded
    defaults)."""
    env = {k: v for k, v in os.environ.items() if k not in GATEWAY_VARIABLES}
    env["PYTHONPATH"] = str(REPO)
    if config is not None:
        path = tmp_path / "gateway-config.json"
        path.write_text(json.dumps(config))
        env["GATEWAY_CONFIG"] = str(path)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO / "main.py")],
        input=body,
        cwd=tmp_path,  # the embedded usage store lands here
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-2000:]
    report = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert report["status"] == 200, report["answer"]
    return report


def remote(url: str, **backend: str) -> dict:
    return {"services": {"eos": {"backend": {"url": url, "model": "eos", **backend}}}}


def test_the_embedded_detector_imports_no_protocol_client(tmp_path, body):
    report = gateway_modules(tmp_path, body, None)
    assert "gateway.backends.local" in report["first_predict"]  # the detector answered
    for when in ("start", "first_predict"):
        assert not set(report[when]) & {*V2_CLIENT, TFSERVING_CLIENT}, when


def test_tf_serving_alone_does_not_import_the_v2_client(tmp_path, body, model_server):
    report = gateway_modules(tmp_path, body, remote(model_server.url))
    for when in ("start", "first_predict"):
        assert TFSERVING_CLIENT in report[when], when
        assert not set(report[when]) & set(V2_CLIENT), when


def test_v2_alone_does_not_import_the_tf_serving_client(tmp_path, body, model_server):
    """Base64 bytes: KServe's ModelServer reads no binary BYTES (the framing is the
    protocol module's either way)."""
    config = remote(model_server.url, protocol="v2", bytes="base64")
    report = gateway_modules(tmp_path, body, config)
    for when in ("start", "first_predict"):
        assert set(V2_CLIENT) <= set(report[when]), when
        assert TFSERVING_CLIENT not in report[when], when
