"""Services on ``protocol: v2`` (``gateway/backends/v2.py``) in a running gateway, against
real model servers: a Triton Inference Server (pytriton) taking the tiles as binary tensor
data and answering TF's outputs, and KServe's ModelServer taking base64 strings and
answering pixel boxes under other output names.  Each finds on the sample slide what the
embedded detector finds; a stopped model server is a 503 ``backend_unavailable``."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import requests
from helpers import SAMPLE_SLIDE, assert_error
from procs import start_gateway, start_model_server, start_triton_server

from gateway.detector import estimate_cell_diameter
from gateway.pipeline.images import decode

pytestmark = pytest.mark.process

THRESHOLD = 0.3
SLIDE = SAMPLE_SLIDE.read_bytes()
SERVICES = ("triton", "kserve")
MAX_PIXELS = 40_000_000


def slide_cell_size() -> str:
    """The cell size the embedded detector estimates on the whole slide and uses for every
    tile: the model servers are told it, as a real model has one fixed scale (each tile
    alone would be estimated apart, and boxes of the same centres would differ in size)."""
    return repr(estimate_cell_diameter(decode(SLIDE, MAX_PIXELS).rgb))


@pytest.fixture(scope="module")
def triton_server():
    proc = start_triton_server(extra=["--cell-size-px", slide_cell_size()])
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def kserve_server():
    proc = start_model_server(
        extra=[
            "--cell-size-px",
            slide_cell_size(),
            "--v2-box-format",
            "xyxy_pixels",
            "--v2-outputs",
            "boxes=b,scores=s,classes=c",
        ]
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def servers(triton_server, kserve_server) -> dict:
    return {"triton": triton_server, "kserve": kserve_server}


@pytest.fixture(scope="module")
def gateway(triton_server, kserve_server, tmp_path_factory):
    config = {
        "services": {
            "triton": {
                "backend": {
                    "protocol": "v2",
                    "url": triton_server.url,
                    "model": "eos",
                    "bytes": "binary",
                    "timeout_s": 60,
                }
            },
            "kserve": {
                "backend": {
                    "protocol": "v2",
                    "url": kserve_server.url,
                    "model": "eos",
                    "bytes": "base64",
                    "box_format": "xyxy_pixels",
                    "outputs": {"boxes": "b", "scores": "s", "classes": "c"},
                    "timeout_s": 60,
                }
            },
        }
    }
    proc = start_gateway(config, workdir=tmp_path_factory.mktemp("gateway"))
    yield proc
    proc.stop()


def detect(url: str, service: str) -> requests.Response:
    return requests.post(
        url + f"/v1/services/{service}:detect",
        json={"image": base64.b64encode(SLIDE).decode(), "threshold": THRESHOLD},
        timeout=120,
    )


@pytest.fixture(scope="module")
def reference(embedded) -> dict:
    """The embedded detector's answer for the sample slide, in-process in a gateway."""
    resp = detect(embedded.url, "eos")
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["count"] > 0
    return doc


def test_services_show_protocol_v2_and_are_ready(gateway):
    resp = requests.get(gateway.url + "/v1/services", timeout=30)
    assert resp.status_code == 200, resp.text
    listed = {s["name"]: s for s in resp.json()["services"]}
    assert set(listed) == set(SERVICES)
    for name in SERVICES:
        assert listed[name]["protocol"] == "v2", listed[name]
        assert listed[name]["kind"] == "detection"
        assert "url" not in listed[name] and "127.0.0.1" not in str(listed[name])
    ready = requests.get(gateway.url + "/readyz", timeout=60)
    assert ready.status_code == 200, ready.text
    states = ready.json()["services"]
    assert all(states[name]["ready"] for name in SERVICES), states
    assert requests.get(gateway.url + "/v2/health/ready", timeout=60).status_code == 200


@pytest.mark.parametrize("service", SERVICES)
def test_detect_finds_what_the_embedded_detector_finds(gateway, reference, service):
    resp = detect(gateway.url, service)
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["service"] == service
    assert doc["count"] == reference["count"]
    assert doc["image"] == reference["image"] and doc["tiles"] == reference["tiles"]
    got = sorted(doc["detections"], key=lambda d: d["box"])
    want = sorted(reference["detections"], key=lambda d: d["box"])
    np.testing.assert_allclose([d["box"] for d in got], [d["box"] for d in want], atol=1.0)
    np.testing.assert_allclose([d["score"] for d in got], [d["score"] for d in want], atol=1e-3)
    assert {d["label"] for d in got} == {"eos"}


@pytest.mark.parametrize("service", SERVICES)
def test_a_stopped_model_server_is_backend_unavailable(gateway, servers, service):
    """Last in this module: it stops the model server the fixture started."""
    servers[service].stop()
    resp = detect(gateway.url, service)
    assert_error(resp, 503, "backend_unavailable")
    ready = requests.get(gateway.url + "/readyz", timeout=60)
    assert ready.status_code == 503, ready.text
    assert not ready.json()["services"][service]["ready"]
