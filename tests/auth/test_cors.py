"""CORS headers for the web app, unit level (the gateway-level checks are in
tests/gateway/test_auth_gateway.py)."""

from __future__ import annotations

import pytest
from werkzeug.test import EnvironBuilder

from gateway.auth.cors import ALLOW_HEADERS, Cors
from gateway.catalog import parse_config
from gateway.config import ConfigError

APP = "https://practice-118b5.firebaseapp.com"


def request(origin: str | None, method: str = "GET"):
    headers = {"Origin": origin} if origin else {}
    return EnvironBuilder(method=method, headers=headers).get_request()


def cors(origins) -> Cors:
    return Cors(parse_config({"cors": {"origins": origins}}))


def test_configured_origin_is_echoed_with_exposed_headers():
    headers = cors([APP + "/"]).headers(request(APP))
    assert headers["Access-Control-Allow-Origin"] == APP
    assert headers["Vary"] == "Origin"
    assert headers["Access-Control-Expose-Headers"] == (
        "X-Request-Id, X-Detections-Count, Retry-After, RateLimit-Policy, RateLimit"
    )
    assert "Access-Control-Allow-Credentials" not in headers


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", APP + ".evil.example", "http://practice-118b5.firebaseapp.com"],
)
def test_other_origins_get_only_vary(origin):
    assert cors([APP]).headers(request(origin)) == {"Vary": "Origin"}


def test_no_origin_configured_means_no_cors_headers():
    assert cors([]).headers(request(APP)) == {}
    assert cors([]).preflight(request(APP, "OPTIONS")) == (204, {})


def test_preflight_for_the_app():
    status, headers = cors([APP]).preflight(request(APP, "OPTIONS"))
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == APP
    assert headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
    assert headers["Access-Control-Allow-Headers"] == "Authorization, X-API-Key, Content-Type"
    assert int(headers["Access-Control-Max-Age"]) > 0


def test_preflight_for_another_origin_allows_nothing():
    status, headers = cors([APP]).preflight(request("https://evil.example", "OPTIONS"))
    assert status == 204 and not any(k.startswith("Access-Control") for k in headers)


def test_wildcard_origin():
    headers = cors(["*"]).headers(request("https://any.example"))
    assert headers["Access-Control-Allow-Origin"] == "https://any.example"


def test_bad_origins_config():
    with pytest.raises(ConfigError):
        cors("https://one.example")


# -- local web app development: no ``cors`` section, off Google Cloud ----------------------

LOCAL = ["http://localhost:5173", "http://127.0.0.1:3000", "http://[::1]:8080", "http://localhost"]
NOT_LOCAL = [
    "http://localhost.evil.example",
    "http://evil.example:5173",
    "http://127.0.0.2:3000",
    "http://192.168.1.20:5173",
    "file://",
    "null",
    "http://localhost:notaport",
    "http://127.0.0.1.nip.io",
]


@pytest.fixture
def local(monkeypatch) -> Cors:
    monkeypatch.delenv("K_SERVICE", raising=False)
    return Cors(parse_config({}))


@pytest.mark.parametrize("origin", LOCAL)
def test_without_a_section_local_pages_are_allowed(local, origin):
    headers = local.headers(request(origin))
    assert headers["Access-Control-Allow-Origin"] == origin
    assert headers["Vary"] == "Origin"
    status, pre = local.preflight(request(origin, "OPTIONS"))
    assert status == 204 and pre["Access-Control-Allow-Headers"] == ALLOW_HEADERS


@pytest.mark.parametrize("origin", NOT_LOCAL)
def test_without_a_section_other_pages_are_not(local, origin):
    assert local.headers(request(origin)) == {"Vary": "Origin"}
    assert local.preflight(request(origin, "OPTIONS")) == (204, {"Vary": "Origin"})


@pytest.mark.parametrize("section", [{"origins": [APP]}, {"origins": []}, {}])
def test_a_written_section_is_the_whole_list(monkeypatch, section):
    monkeypatch.delenv("K_SERVICE", raising=False)
    configured = Cors(parse_config({"cors": section}))
    assert not configured.allowed("http://localhost:5173")
    assert configured.allowed(APP) == bool(section.get("origins"))


def test_on_google_cloud_local_pages_are_not_allowed(monkeypatch):
    monkeypatch.setenv("K_SERVICE", "eos-gateway")
    deployed = Cors(parse_config({}))
    assert not deployed.serves_browsers
    assert deployed.headers(request("http://localhost:5173")) == {}
    assert deployed.preflight(request("http://127.0.0.1:3000", "OPTIONS")) == (204, {})
