"""TF Serving's URLs in the route table, the default service of ``POST /``, and the
version or label each backend is pinned to (no network: the model server's answers are
tested end to end in tests/gateway/test_tfserving_clients.py).

Source of the URL forms: TF Serving's ``api_rest.md`` ("Model status API", "Model
Metadata API", "Predict API"): ``/v1/models/${MODEL_NAME}[/versions/${VERSION}|
/labels/${LABEL}]`` followed by nothing, ``/metadata`` or ``:predict``.
"""

from __future__ import annotations

import json

import pytest

from gateway.backends import tfserving_wire as wire
from gateway.backends.local import LocalBackend
from gateway.backends.tfserving import TFServingBackend
from gateway.catalog import parse_config
from gateway.codecs.tfserving_api import parse_version
from gateway.config import ConfigError
from gateway.errors import BadRequest, MethodNotAllowed, UnknownLabel, UnknownVersion
from gateway.rest import routes


@pytest.mark.parametrize(
    "method,path,route,params",
    [
        ("POST", "/v1/models/eos:predict", "predict", {"service": "eos"}),
        ("POST", "/v1/models/eos/versions/12:predict", "predict", {"version": "12"}),
        ("POST", "/v1/models/eos/labels/stable:predict", "predict", {"label": "stable"}),
        ("GET", "/v1/models/eos", "model_status", {"service": "eos"}),
        ("GET", "/v1/models/eos/versions/1", "model_status", {"version": "1"}),
        ("GET", "/v1/models/eos/labels/canary", "model_status", {"label": "canary"}),
        ("GET", "/v1/models/eos/metadata", "model_metadata", {"service": "eos"}),
        ("GET", "/v1/models/eos/versions/3/metadata", "model_metadata", {"version": "3"}),
        ("GET", "/v1/models/eos/labels/x/metadata", "model_metadata", {"label": "x"}),
        ("POST", "/", "predict", {}),
        ("GET", "/", "demo", {}),
    ],
)
def test_tf_serving_urls_route(method, path, route, params):
    found = routes.match(method, path)
    assert found.route.name == route
    assert params.items() <= found.params.items()


def test_a_wrong_method_is_405_not_tf_serving_s_400():
    # http_rest_api_handler_test.cc, UnsupportedApiCalls: GET .../foo:predict is a 400
    # "Malformed request" there; here 405 with the methods that are allowed.
    with pytest.raises(MethodNotAllowed) as info:
        routes.match("GET", "/v1/models/eos/versions/50:predict")
    assert "POST" in info.value.headers["Allow"]


@pytest.mark.parametrize("bad", ["HELLO", "-1", "1.5", "١", "9" * 20])
def test_versions_are_digits(bad):
    # UnsupportedApiCalls: versions/HELLO is malformed; uint64 max "Failed to convert"
    assert parse_version("123") == "123" and parse_version(None) is None
    with pytest.raises(BadRequest):
        parse_version(bad)


def test_the_default_service():
    assert parse_config({}).default_service_name() == "eos"  # the only one
    two = {"services": {"a": {}, "b": {}}}
    assert parse_config(two).default_service_name() is None
    assert parse_config({**two, "default_service": "b"}).default_service_name() == "b"
    with pytest.raises(ConfigError, match="default_service"):
        parse_config({**two, "default_service": "c"})


def test_the_embedded_detector_is_one_version_without_labels():
    local = LocalBackend(parse_config({}).services["eos"])
    assert local.pinned("1") is local and local.pinned() is local
    assert local.model_status()["model_version_status"][0]["version"] == "1"
    assert local.readiness().version == "1"
    with pytest.raises(UnknownVersion, match=r"Specific\(eos, 2\)"):
        local.pinned("2")
    with pytest.raises(UnknownLabel) as info:
        local.model_metadata(label="stable")
    assert info.value.status == 400


def test_a_pinned_remote_model_keeps_its_version_or_label_in_the_url():
    cfg = parse_config(
        {"services": {"eos": {"backend": {"url": "http://tfs:8501/base", "model": "m"}}}}
    ).services["eos"]
    remote = TFServingBackend(cfg)
    try:
        assert remote.pinned() is remote
        v = remote.pinned("7")
        assert v.predict_path == "/base/v1/models/m/versions/7:predict"
        lab = remote.pinned(label="a b")
        assert lab.status_path == "/base/v1/models/m/labels/a%20b"
        assert remote.predict_path == "/base/v1/models/m:predict"  # untouched
        assert v.client is remote.client  # one pool, one set of threads
    finally:
        remote.client.executor.shutdown()


def test_the_version_a_status_names_is_the_latest_available():
    # api_rest.md: without a version, TF Serving serves the latest one
    rows = [
        {"version": "2", "state": "AVAILABLE"},
        {"version": "10", "state": "AVAILABLE"},
        {"version": "11", "state": "LOADING"},
    ]
    body = json.dumps({"model_version_status": rows}).encode()
    assert wire.model_status(body)[:2] == (True, "10")
