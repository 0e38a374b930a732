"""Why a model is not ready, as ``/readyz`` names it: every protocol gives the class of the
failure (``unreachable``, ``model_not_available``, ...), and the model server's own text
stays in ``detail``, for the logs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from procs import free_port
from raw_server import raw_server

from gateway.backends import base
from gateway.backends.base import READINESS_REASONS
from gateway.backends.local import LocalBackend
from gateway.backends.tfserving import TFServingBackend
from gateway.backends.v2 import V2Backend
from gateway.backends.vertex import VertexBackend
from gateway.catalog import parse_config
from gateway.errors import CredentialsUnavailable

SECRET = "model server internals: /opt/models/eos/1 failed"
VERTEX = {"protocol": "vertex", "project": "p", "location": "europe-west4", "endpoint": "1"}


def http(status: int, body: object = None) -> bytes:
    data = json.dumps({"error": SECRET} if body is None else body).encode()
    head = (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


@pytest.fixture
def answering() -> Iterator:
    stops = []

    def start(reply: bytes) -> str:
        port, stop = raw_server(reply)
        stops.append(stop)
        return f"http://127.0.0.1:{port}"

    yield start
    for stop in stops:
        stop.set()


class Tokens:
    """An access token source that has a token, or cannot get one."""

    def __init__(self, ok: bool = True) -> None:
        self.ok = ok

    def authorization_header(self) -> str:
        if not self.ok:
            raise CredentialsUnavailable("the gateway could not obtain credentials")
        return "Bearer t"

    def invalidate(self, token: str | None = None) -> None:
        return None


def backend(protocol: str, url: str, tokens: Tokens | None = None):
    section = {"url": url, "retries": 0, "timeout_s": 5}
    if protocol == "vertex":
        section.update(VERTEX)
    elif protocol == "v2":
        section["protocol"] = "v2"
    svc = parse_config({"services": {"m": {"backend": section}}}).services["m"]
    if protocol == "vertex":
        return VertexBackend(svc, tokens=tokens or Tokens())
    return (V2Backend if protocol == "v2" else TFServingBackend)(svc)


PROTOCOLS = ["tfserving", "v2", "vertex"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_server_that_is_not_there_is_unreachable(protocol):
    state = backend(protocol, f"http://127.0.0.1:{free_port()}").readiness()
    assert (state.ready, state.reason) == (False, "unreachable")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "status,reason",
    [
        (404, "model_not_available"),
        (401, "credentials_refused"),
        (403, "credentials_refused"),
        (500, "bad_response"),
    ],
)
def test_the_class_of_a_refusal_and_the_servers_text_kept_for_the_logs(
    answering, protocol, status, reason
):
    state = backend(protocol, answering(http(status))).readiness()
    assert (state.ready, state.reason) == (False, reason)
    assert SECRET in state.detail  # for the log line; the handlers answer the reason only


def test_a_tf_serving_model_still_loading_is_not_available(answering):
    doc = {"model_version_status": [{"version": "1", "state": "LOADING"}]}
    state = backend("tfserving", answering(http(200, doc))).readiness()
    assert (state.ready, state.reason) == (False, "model_not_available")
    ready = {"model_version_status": [{"version": "2", "state": "AVAILABLE"}]}
    state = backend("tfserving", answering(http(200, ready))).readiness()
    assert (state.ready, state.reason, state.version) == (True, None, "2")


@pytest.mark.parametrize("status", [400, 503])
def test_a_v2_model_loaded_but_not_ready_is_not_available(answering, status):
    """Triton answers 400 and KServe 503 for a model that is there but not ready."""
    state = backend("v2", answering(http(status))).readiness()
    assert (state.ready, state.reason) == (False, "model_not_available")


def test_a_vertex_endpoint_without_a_deployed_model_is_not_available(answering):
    state = backend("vertex", answering(http(200, {"name": "e"}))).readiness()
    assert (state.ready, state.reason) == (False, "model_not_available")
    state = backend("vertex", answering(http(200, {"deployedModels": "x"}))).readiness()
    assert (state.ready, state.reason) == (False, "bad_response")


def test_no_token_for_the_backend_is_no_credentials(answering):
    url = answering(http(200, {"deployedModels": [{"id": "1"}]}))
    assert backend("vertex", url).readiness().ready is True
    state = backend("vertex", url, Tokens(ok=False)).readiness()
    assert (state.ready, state.reason) == (False, "no_credentials")


def test_a_tf_serving_status_that_is_not_json_is_a_bad_response(answering):
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    state = backend("tfserving", answering(reply)).readiness()
    assert (state.ready, state.reason) == (False, "bad_response")


def test_the_embedded_detector_is_ready_without_a_reason():
    svc = parse_config({}).services["eos"]
    state = LocalBackend(svc).readiness()
    assert (state.ready, state.reason) == (True, None)


def test_every_reason_is_a_documented_class():
    assert base.status_reason(429) in READINESS_REASONS
    assert base.status_reason(504) == "timeout"
    assert set(READINESS_REASONS) >= {
        "unreachable",
        "timeout",
        "no_credentials",
        "model_not_available",
        "bad_response",
    }
