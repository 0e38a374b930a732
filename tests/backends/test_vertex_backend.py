"""The Vertex AI outbound protocol (``protocol: vertex``) end to end, in process: a gateway
built from a configuration naming it, against a local Vertex endpoint
(``tests/vertex_standin.py``: the embedded detector behind Vertex's wire format) and a
local Google token endpoint (``tests/certserver.py``) that a service-account key file
points at, so google-auth's real token flow signs every request.

The endpoint checks each request's Bearer token and refuses bodies over Vertex's 1.5 MB
limit, so the counts below are what a real endpoint would let through.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import textwrap
import time
from collections.abc import Iterator

import numpy as np
import pytest
from certserver import METADATA_EMAIL, GoogleStandIn
from helpers import SAMPLE_SLIDE, gateway_app, run_on_google_cloud
from PIL import Image
from vertex_standin import (
    DEPLOYED_MODEL_ID,
    ENDPOINT,
    LIMIT_BYTES,
    LOCATION,
    MODEL_VERSION_ID,
    PROJECT,
    VertexStandIn,
)

from gateway import runtime
from gateway.backends.base import ImageInput, TileInput
from gateway.backends.credentials import CLOUD_PLATFORM, AccessTokenSource
from gateway.backends.vertex import VertexBackend
from gateway.catalog import parse_config
from gateway.detector import estimate_cell_diameter
from gateway.errors import GatewayError, NotFound, UnknownLabel, UnknownVersion
from gateway.schema import ConfigError
from gateway.usecases.detection import detect

VERTEX = {"protocol": "vertex", "project": PROJECT, "location": LOCATION, "endpoint": ENDPOINT}


@pytest.fixture(scope="module")
def slide() -> bytes:
    return SAMPLE_SLIDE.read_bytes()


@pytest.fixture(scope="module")
def cell_px(slide) -> float:
    """The slide's cell size, given to both detectors: a real model has one scale, while
    the embedded detector would judge each tile's alone (``tests/test_fastpath.py``)."""
    return round(estimate_cell_diameter(np.asarray(Image.open(io.BytesIO(slide)).convert("RGB"))))


@pytest.fixture
def google() -> Iterator[GoogleStandIn]:
    server = GoogleStandIn()
    yield server
    server.stop()


@pytest.fixture
def key_file(google, tmp_path) -> str:
    return google.service_account_file(str(tmp_path / "sa.json"))


@pytest.fixture
def endpoint(google, cell_px) -> Iterator[VertexStandIn]:
    server = VertexStandIn(lambda token: token in google.state.access_tokens, cell_px=cell_px)
    yield server
    server.stop()


def build(standin: VertexStandIn, key_file: str, cell_px: float, **backend):
    """A gateway with the embedded detector (``eos``) and the endpoint (``vx``)."""
    raw = {
        "services": {
            "eos": {"cell_size_px": cell_px},
            "vx": {
                "cell_size_px": cell_px,
                "backend": {
                    **VERTEX,
                    "url": standin.url,
                    "credentials_file": key_file,
                    "timeout_s": 30,
                    **backend,
                },
            },
        },
        "usage": {"enabled": False},
    }
    return runtime.build_gateway(parse_config(raw))


def build_one(name: str, kind: str, url: str, key_file: str):
    """A gateway of one service, ``name`` of ``kind``, on the endpoint at ``url``."""
    backend = {**VERTEX, "url": url, "credentials_file": key_file}
    raw = {"services": {name: {"kind": kind, "backend": backend}}, "usage": {"enabled": False}}
    return runtime.build_gateway(parse_config(raw))


def run(gw, name: str, images: list[bytes]):
    svc = gw.services.get(name)
    return detect(svc, images, 0.0, limits=gw.config.limits, quota=lambda n: None)


def predicting(backend: VertexBackend, tiles: list[TileInput], timeout_s: float = 30.0):
    return backend.predict([tiles], time.monotonic() + timeout_s)


def noise_tile(index: int, width: int, height: int) -> TileInput:
    rgb = np.random.default_rng(index).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95)
    return TileInput(index=index, width=width, height=height, encoded=buf.getvalue())


# -- configuration ---------------------------------------------------------------------------


def test_the_url_defaults_to_the_regional_endpoint():
    cfg = parse_config({"services": {"vx": {"backend": dict(VERTEX)}}}).services["vx"]
    assert cfg.backend.url == f"https://{LOCATION}-aiplatform.googleapis.com"
    assert not cfg.backend.is_local
    assert cfg.backend.options.max_predictions == 100
    backend = VertexBackend(cfg)
    assert backend.predict_path == (
        f"/v1/projects/{PROJECT}/locations/{LOCATION}/endpoints/{ENDPOINT}:predict"
    )
    assert backend.tokens.refreshes == 0  # no token before the first request


@pytest.mark.parametrize("key", ["project", "location", "endpoint"])
def test_each_endpoint_key_is_required(key):
    backend = {k: v for k, v in VERTEX.items() if k != key}
    with pytest.raises(ConfigError, match=rf"services\.vx\.backend\.{key} is required"):
        parse_config({"services": {"vx": {"backend": backend}}})


def test_a_location_must_be_a_region_and_keys_belong_to_their_protocol():
    with pytest.raises(ConfigError, match="location must be a region"):
        parse_config({"services": {"vx": {"backend": {**VERTEX, "location": "evil.com/x"}}}})
    with pytest.raises(ConfigError, match="max_predictions must be >= 1"):
        parse_config({"services": {"vx": {"backend": {**VERTEX, "max_predictions": 0}}}})
    with pytest.raises(ConfigError, match="unknown key 'endpoint'"):
        parse_config({"services": {"eos": {"backend": {"endpoint": "1"}}}})


# -- detection ---------------------------------------------------------------------------------


def test_counts_and_boxes_equal_the_embedded_detectors(endpoint, google, key_file, cell_px, slide):
    gw = build(endpoint, key_file, cell_px)
    local = run(gw, "eos", [slide]).slides[0].slide
    remote = run(gw, "vx", [slide]).slides[0].slide
    assert len(local.tiles) > 1 and len(remote.tiles) == len(local.tiles)
    assert len(remote.detections) == len(local.detections) >= 24  # the slide's eosinophils
    ours = local.detections.boxes[np.lexsort(local.detections.boxes.T[::-1])]
    theirs = remote.detections.boxes[np.lexsort(remote.detections.boxes.T[::-1])]
    np.testing.assert_allclose(theirs, ours, atol=1.0)
    assert remote.labels == ("eos",) and set(remote.detections.classes.tolist()) == {0}
    assert remote.version == MODEL_VERSION_ID
    # max_batch 1: one request per tile, each signed with the one token fetched
    sent = endpoint.state.requests
    assert len(sent) == len(remote.tiles)
    assert {r.parameters["confidenceThreshold"] for r in sent} == {0.0}
    assert {r.parameters["maxPredictions"] for r in sent} == {100}
    assert google.state.hits["token"] == 1
    assert len({r.authorization for r in sent}) == 1
    run(gw, "vx", [slide, slide])
    assert google.state.hits["token"] == 1  # cached across requests


def test_max_predictions_is_sent(endpoint, key_file, cell_px, slide):
    gw = build(endpoint, key_file, cell_px, max_predictions=2, max_batch=8)
    result = run(gw, "vx", [slide]).slides[0].slide
    assert {r.parameters["maxPredictions"] for r in endpoint.state.requests} == {2}
    assert len(result.detections) <= 2 * len(result.tiles)


def test_tiles_are_batched_under_the_request_limit(endpoint, google, key_file, cell_px):
    gw = build(endpoint, key_file, cell_px, max_batch=8)
    backend = gw.services.get("vx").backend
    tiles = [noise_tile(i, 640, 480) for i in range(10)]  # ~480 kB of base64 each
    result = predicting(backend, tiles)
    assert len(result.tiles) == 10
    sent = endpoint.state.requests
    assert sorted(r.instances for r in sent) == [1, 3, 3, 3]  # sent in parallel
    assert all(r.size <= LIMIT_BYTES for r in sent)
    assert sum(r.instances for r in sent) == 10


def test_a_tile_over_the_limit_goes_alone_and_its_refusal_is_a_502(endpoint, key_file, cell_px):
    gw = build(endpoint, key_file, cell_px, max_batch=8)
    backend = gw.services.get("vx").backend
    huge = noise_tile(99, 1400, 1000)
    assert len(huge.encoded) * 4 / 3 > LIMIT_BYTES
    with pytest.raises(GatewayError) as info:
        predicting(backend, [noise_tile(0, 64, 48), huge, noise_tile(1, 64, 48)])
    assert (info.value.status, info.value.code) == (502, "backend_rejected")
    assert "payload size" not in info.value.message and "payload size" in info.value.detail


def test_max_batch_bounds_the_instances_of_a_request(endpoint, key_file, cell_px):
    gw = build(endpoint, key_file, cell_px, max_batch=2)
    backend = gw.services.get("vx").backend
    predicting(backend, [noise_tile(i, 32, 32) for i in range(5)])
    assert sorted(r.instances for r in endpoint.state.requests) == [1, 2, 2]


# -- tokens ----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_the_token_is_refreshed_near_its_expiry(endpoint, google, key_file, cell_px):
    gw = build(endpoint, key_file, cell_px)
    clock = Clock()
    tokens = AccessTokenSource(key_file, refresh_margin_s=300, clock=clock)
    backend = VertexBackend(gw.config.services["vx"], tokens=tokens)
    tile = [noise_tile(0, 32, 32)]
    predicting(backend, tile)
    clock.now += 3600 - 400  # still outside the margin
    predicting(backend, tile)
    assert google.state.hits["token"] == 1
    clock.now += 200  # in the last five minutes
    predicting(backend, tile)
    assert google.state.hits["token"] == 2
    seen = [r.authorization for r in endpoint.state.requests]
    assert seen[0] == seen[1] != seen[2]
    assert {s for _, s in google.state.access_tokens.values()} == {CLOUD_PLATFORM}


def test_a_token_that_cannot_be_had_is_a_503_logged_with_its_reason(
    endpoint, google, key_file, cell_px, slide, capsys
):
    google.state.service_accounts.clear()  # the token endpoint refuses the key
    gw = build(endpoint, key_file, cell_px)
    with pytest.raises(GatewayError) as info:
        run(gw, "vx", [slide])
    assert (info.value.status, info.value.code) == (503, "backend_unavailable")
    assert endpoint.state.requests == []
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "{" in line]
    reasons = [
        r for r in logged if r.get("message") == "could not obtain an access token for the backend"
    ]
    assert reasons and "RefreshError" in reasons[0]["error"]
    assert gw.services.get("vx").backend.readiness().ready is False


def test_a_refused_token_is_fetched_again(endpoint, google, key_file, cell_px):
    gw = build(endpoint, key_file, cell_px)
    backend = gw.services.get("vx").backend
    predicting(backend, [noise_tile(0, 32, 32)])
    google.state.access_tokens.clear()  # revoked
    with pytest.raises(GatewayError) as info:
        predicting(backend, [noise_tile(0, 32, 32)])
    assert (info.value.status, info.value.code) == (503, "backend_unavailable")
    predicting(backend, [noise_tile(0, 32, 32)])
    assert google.state.hits["token"] == 2


def test_application_default_credentials_from_the_environment(
    endpoint, google, key_file, cell_px, monkeypatch
):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", key_file)
    gw = build(endpoint, key_file, cell_px, credentials_file=None)
    backend = gw.services.get("vx").backend
    for i in range(3):
        predicting(backend, [noise_tile(i, 32, 32)])
    assert google.state.hits["token"] == 1
    assert len({r.authorization for r in endpoint.state.requests}) == 1


@pytest.mark.process
def test_application_default_credentials_on_google_cloud(google, tmp_path):
    """No key anywhere: the metadata server's access token, as on Cloud Functions."""
    script = textwrap.dedent(
        """
        from gateway.backends.credentials import CLOUD_PLATFORM, AccessTokenSource
        source = AccessTokenSource()
        headers = {source.authorization_header() for _ in range(20)}
        assert len(headers) == 1
        print(headers.pop())
        """
    )
    # A HOME of its own: no gcloud credentials.
    header = run_on_google_cloud(script, google.host, 120, HOME=str(tmp_path))
    token = header.removeprefix("Bearer ")
    assert google.state.access_tokens[token] == (METADATA_EMAIL, CLOUD_PLATFORM)
    assert google.state.hits["metadata:token"] == 1


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failures, status, code",
    [
        ([400], 502, "backend_rejected"),
        ([404], 502, "backend_rejected"),
        ([429, 429, 429], 503, "backend_unavailable"),
        ([503, 503, 503], 503, "backend_unavailable"),
        ([500], 502, "backend_bad_response"),
    ],
)
def test_the_endpoints_errors(endpoint, key_file, cell_px, failures, status, code):
    gw = build(endpoint, key_file, cell_px, retries=2)
    endpoint.state.failures = list(failures)
    with pytest.raises(GatewayError) as info:
        predicting(gw.services.get("vx").backend, [noise_tile(0, 32, 32)])
    assert (info.value.status, info.value.code) == (status, code)
    assert "stand-in failure" not in info.value.message  # logged, never answered
    assert "stand-in failure" in (info.value.detail or "")
    assert endpoint.state.failures == []  # 429 and 503 were retried


def test_busy_then_answering_is_retried(endpoint, key_file, cell_px):
    gw = build(endpoint, key_file, cell_px, retries=2)
    endpoint.state.failures = [503, 429]
    result = predicting(gw.services.get("vx").backend, [noise_tile(0, 32, 32)])
    assert len(result.tiles) == 1 and result.version == MODEL_VERSION_ID


def test_a_slow_endpoint_is_a_504(endpoint, key_file, cell_px):
    gw = build(endpoint, key_file, cell_px, timeout_s=0.5)
    endpoint.state.delay_s = 2.0
    with pytest.raises(GatewayError) as info:
        predicting(gw.services.get("vx").backend, [noise_tile(0, 32, 32)], timeout_s=0.5)
    assert (info.value.status, info.value.code) == (504, "backend_timeout")


def test_an_unreachable_endpoint_is_a_503(endpoint, key_file, cell_px):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    gw = build(endpoint, key_file, cell_px, url=closed)
    with pytest.raises(GatewayError) as info:
        predicting(gw.services.get("vx").backend, [noise_tile(0, 32, 32)])
    assert (info.value.status, info.value.code) == (503, "backend_unavailable")


# -- readiness, versions -------------------------------------------------------------------------


def test_ready_only_with_a_deployed_model(endpoint, key_file, cell_px):
    gw = build(endpoint, key_file, cell_px)
    backend = gw.services.get("vx").backend
    state = backend.readiness()
    assert state.ready and state.version == MODEL_VERSION_ID
    status = backend.model_status()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    endpoint.state.deployed = [{"id": DEPLOYED_MODEL_ID}, {"id": "2"}]  # a traffic split
    assert backend.readiness().ready
    endpoint.state.deployed = []
    assert not backend.readiness().ready
    with pytest.raises(GatewayError) as info:
        backend.model_status()
    assert (info.value.status, info.value.code) == (503, "model_not_available")
    assert endpoint.state.resource_gets == 5  # each asked the endpoint itself


def test_another_endpoint_is_not_ready(endpoint, key_file, cell_px):
    gw = build(endpoint, key_file, cell_px, endpoint="999")
    state = gw.services.get("vx").backend.readiness()
    assert not state.ready and "404" in state.detail


def test_versions_and_labels_cannot_be_pinned(endpoint, key_file, cell_px):
    gw = build(endpoint, key_file, cell_px)
    backend = gw.services.get("vx").backend
    assert backend.pinned() is backend
    with pytest.raises(UnknownVersion, match="splits its traffic") as version:
        backend.pinned(version="2")
    with pytest.raises(UnknownLabel, match="splits its traffic") as label:
        backend.model_status(label="stable")
    assert (version.value.status, label.value.status) == (404, 400)
    with pytest.raises(NotFound):
        backend.model_metadata()


# -- the other roles -------------------------------------------------------------------------------


def test_passthrough_body_and_answer_unchanged(endpoint, key_file, cell_px):
    tile = noise_tile(0, 32, 32).encoded
    body = json.dumps(
        {
            "instances": [{"content": base64.b64encode(tile).decode(), "mimeType": "image/jpeg"}],
            "parameters": {"confidenceThreshold": 0.9, "maxPredictions": 5},
        }
    ).encode()
    gw = build_one("any", "passthrough", endpoint.url, key_file)
    backend = gw.services.get("any").backend
    got = backend.forward(body, time.monotonic() + 30)
    assert got.status == 200 and got.version == MODEL_VERSION_ID
    assert json.loads(got.body)["deployedModelId"] == DEPLOYED_MODEL_ID
    assert endpoint.state.requests[0].size == len(body)
    assert endpoint.state.requests[0].parameters == {
        "confidenceThreshold": 0.9,
        "maxPredictions": 5,
    }
    refused = backend.forward(b'{"instances": "x"}', time.monotonic() + 30)
    assert refused.status == 400 and refused.error.startswith("INVALID_ARGUMENT: ")
    assert json.loads(refused.body)["error"]["code"] == 400  # the endpoint's own answer
    endpoint.state.failures = [503, 503, 503]
    with pytest.raises(GatewayError) as info:
        backend.forward(body, time.monotonic() + 30)
    assert info.value.status == 503


def test_classification(google, key_file):
    endpoint = VertexStandIn(lambda t: t in google.state.access_tokens, kind="classification")
    try:
        gw = build_one("tissue", "classification", endpoint.url, key_file)
        red = np.zeros((40, 40, 3), np.uint8)
        red[..., 0] = 230
        images = [ImageInput(noise_tile(0, 40, 40).encoded), ImageInput(_png(red))]
        result = gw.services.get("tissue").backend.classify(images, time.monotonic() + 30)
    finally:
        endpoint.stop()
    assert [p.labels[0] for p in result.predictions] == ["normal", "inflamed"]
    assert result.predictions[1].scores[0] > 0.8 and result.version == MODEL_VERSION_ID


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


# -- through HTTP ----------------------------------------------------------------------------------


def test_detect_and_readyz_over_http(endpoint, key_file, cell_px, slide, monkeypatch):
    gw = build(endpoint, key_file, cell_px, max_batch=4)
    monkeypatch.setattr(runtime, "_gateway", gw)
    app = gateway_app()
    client = app.test_client()
    local = client.post("/v1/services/eos:detect", data=slide, content_type="image/jpeg")
    remote = client.post("/v1/services/vx:detect", data=slide, content_type="image/jpeg")
    assert local.status_code == remote.status_code == 200, remote.get_json()
    assert remote.get_json()["count"] == local.get_json()["count"] == 24
    assert remote.get_json()["model"]["version"] == MODEL_VERSION_ID
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["services"]["vx"]["version"] == MODEL_VERSION_ID
    services = client.get("/v1/services/vx").get_json()
    assert services["protocol"] == "vertex"
    status = client.get("/v1/models/vx").get_json()
    assert status["model_version_status"][0]["version"] == MODEL_VERSION_ID
    pinned = client.post("/v1/models/vx/versions/2:predict", json={"instances": []})
    assert pinned.status_code == 404 and pinned.get_json()["code"] == "unknown_version"
    endpoint.state.deployed = []
    assert client.get("/readyz").status_code == 503
    endpoint.state.failures = [404]
    refused = client.post("/v1/services/vx:detect", data=slide, content_type="image/jpeg")
    assert refused.status_code == 502 and refused.get_json()["code"] == "backend_rejected"
