"""Authentication, authorization and CORS through a running gateway (functions-framework).

Real processes and sockets: the gateway, the local stand-in for Google's certificate,
metadata and token endpoints, the KServe model server and the Firestore emulator.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request

import pytest
from certserver import (
    FIREBASE_PROJECT,
    GATEWAY_AUDIENCE,
    SA_EMAIL,
    GoogleStandIn,
    KeyPair,
    b64url,
    firebase_claims,
    google_claims,
    jws,
)
from google.auth import jwt as google_jwt
from helpers import png, sha
from process_guard import process_fixture
from procs import start_gateway, start_model_server
from synthetic import make_slide

# Every test here runs the gateway (or the CLI) as its own process.
pytestmark = pytest.mark.process

APP_ORIGIN = "https://practice-118b5.firebaseapp.com"
LAB_KEY = "lab-key-5d2c7a90e1f3"
OTHER_KEY = "other-key-8e4b1c0d9a7f"
OLD_KEY = "old-key-3f6a2b8c1d0e"


@pytest.fixture(scope="module")
def slide() -> bytes:
    """A small PNG slide with two eosinophils."""
    return png(make_slide(320, 240, [(110, 100, 40), (220, 150, 42)], seed=3))


def auth_section(standin: GoogleStandIn) -> dict:
    return {
        "firebase": {"project_id": FIREBASE_PROJECT},
        "google": {"audiences": [GATEWAY_AUDIENCE], "emails": [SA_EMAIL]},
        "api_keys": [
            {"id": "lab-script", "sha256": sha(LAB_KEY)},
            {"id": "other-script", "sha256": sha(OTHER_KEY)},
            {"id": "old-script", "sha256": sha(OLD_KEY), "disabled": True},
        ],
        "certs_urls": {
            "firebase": standin.certs_url("firebase"),
            "google": standin.certs_url("google"),
        },
        "clock_skew_s": 10,
    }


@process_fixture(scope="module")
def gateway(standin):
    standin.state.max_age = 21600  # the certificates stay cached for the whole module
    config = {
        "auth": auth_section(standin),
        "cors": {"origins": [APP_ORIGIN]},
        "services": {
            "eos": {"allow": ["firebase:*", "key:lab-script", f"google:{SA_EMAIL}"]},
        },
    }
    proc = start_gateway(config)
    yield proc
    proc.stop()


def send(url: str, method: str = "POST", body: bytes | None = None, headers=None):
    headers = dict(headers or {})
    if body is not None:
        headers.setdefault("Content-Type", "image/png")
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def detect(gateway, slide, headers=None, query: str = "", service: str = "eos"):
    return send(f"{gateway.url}/v1/services/{service}:detect{query}", body=slide, headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_json_error(status, headers, body, expected_status, code):
    assert status == expected_status, body
    assert headers["Content-Type"].startswith("application/json")
    doc = json.loads(body)
    assert doc["code"] == code and doc["error"] and doc["request_id"]
    assert doc["request_id"] == headers["X-Request-Id"]
    return doc


def test_firebase_token_is_accepted(gateway, slide, keys):
    status, _, body = detect(gateway, slide, bearer(keys["fb-1"].sign(firebase_claims())))
    assert status == 200, body
    assert json.loads(body)["service"] == "eos"


def test_google_token_is_accepted(gateway, slide, keys):
    status, _, body = detect(gateway, slide, bearer(keys["g-1"].sign(google_claims())))
    assert status == 200, body


def test_api_key_in_header_and_query(gateway, slide):
    assert detect(gateway, slide, {"X-API-Key": LAB_KEY})[0] == 200
    assert detect(gateway, slide, query=f"?key={LAB_KEY}")[0] == 200


def test_missing_credentials(gateway, slide):
    status, headers, body = detect(gateway, slide)
    assert_json_error(status, headers, body, 401, "unauthenticated")
    assert headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("key", ["wrong-key", OLD_KEY])
def test_wrong_and_disabled_api_keys(gateway, slide, key):
    status, headers, body = detect(gateway, slide, {"X-API-Key": key})
    assert_json_error(status, headers, body, 401, "unauthenticated")


def test_principal_not_on_allow_list_is_forbidden(gateway, slide):
    status, headers, body = detect(gateway, slide, {"X-API-Key": OTHER_KEY})
    doc = assert_json_error(status, headers, body, 403, "forbidden")
    assert "key:other-script" in doc["error"]


def _bad_tokens(keys: dict[str, KeyPair]) -> dict[str, str]:
    now = int(time.time())
    fb, good = keys["fb-1"], keys["fb-1"].sign(firebase_claims())
    head, payload, sig = good.split(".")
    unsigned = jws({"alg": "HS256", "kid": "fb-1"}, firebase_claims()).rsplit(".", 1)[0]
    hs256 = hmac.new(fb.public_pem.encode(), unsigned.encode(), hashlib.sha256).digest()
    return {
        "expired": fb.sign(firebase_claims(iat=now - 7200, exp=now - 3600)),
        "issued in the future": fb.sign(firebase_claims(iat=now + 600, exp=now + 4200)),
        "auth_time in the future": fb.sign(firebase_claims(auth_time=now + 600)),
        "wrong audience": fb.sign(firebase_claims(aud="not-my-project")),
        "wrong issuer": keys["g-1"].sign(google_claims(iss="https://issuer.example")),
        "other firebase project": fb.sign(firebase_claims(project="other-project")),
        "empty sub": fb.sign(firebase_claims(sub="")),
        "alg none": jws({"alg": "none", "kid": "fb-1"}, firebase_claims()),
        "hs256 with public key": unsigned + "." + b64url(hs256),
        "unknown kid": keys["rogue"].sign(firebase_claims()),
        "tampered payload": ".".join(
            [head, b64url(json.dumps(firebase_claims(uid="admin")).encode()), sig]
        ),
        "tampered signature": ".".join([head, payload, sig[:-6] + "AAAAAA"]),
        "garbage": "this-is-not-a-jwt",
        "over the size cap": "x" * 8150,
        "google email not allowed": keys["g-1"].sign(google_claims(email="x@evil.example")),
        "google wrong audience": keys["g-1"].sign(google_claims(audience="https://elsewhere")),
    }


BAD_TOKEN_CASES = [
    "expired",
    "issued in the future",
    "auth_time in the future",
    "wrong audience",
    "wrong issuer",
    "other firebase project",
    "empty sub",
    "alg none",
    "hs256 with public key",
    "unknown kid",
    "tampered payload",
    "tampered signature",
    "garbage",
    "over the size cap",
    "google email not allowed",
    "google wrong audience",
]


@pytest.mark.parametrize("case", BAD_TOKEN_CASES)
def test_bad_tokens_are_401_json(gateway, slide, keys, case):
    token = _bad_tokens(keys)[case]
    status, headers, body = detect(gateway, slide, bearer(token))
    doc = assert_json_error(status, headers, body, 401, "unauthenticated")
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert "Traceback" not in doc["error"] and token[:40] not in doc["error"]


def test_certificates_are_fetched_once_for_many_requests(gateway, slide, keys, standin):
    assert detect(gateway, slide, bearer(keys["fb-1"].sign(firebase_claims())))[0] == 200
    assert detect(gateway, slide, bearer(keys["g-1"].sign(google_claims())))[0] == 200
    before = standin.state.hits.copy()
    for i in range(8):
        token = keys["fb-1"].sign(firebase_claims(uid=f"user-{i}"))
        assert detect(gateway, slide, bearer(token))[0] == 200
        assert detect(gateway, slide, bearer(keys["g-1"].sign(google_claims())))[0] == 200
    assert standin.state.hits == before
    assert standin.state.hits["certs:firebase"] == 1
    assert standin.state.hits["certs:google"] == 1


# -- CORS --------------------------------------------------------------------------------------


def test_preflight_from_the_app_needs_no_credentials(gateway):
    status, headers, _ = send(
        f"{gateway.url}/v1/services/eos:detect",
        method="OPTIONS",
        headers={
            "Origin": APP_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "Origin" in headers["Vary"]
    assert set(headers["Access-Control-Allow-Methods"].split(", ")) == {"GET", "POST", "OPTIONS"}
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "x-api-key", "content-type"} <= allowed


def test_preflight_from_another_origin_gets_no_cors_headers(gateway):
    status, headers, _ = send(
        f"{gateway.url}/v1/services/eos:detect",
        method="OPTIONS",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert status == 204
    assert not any(h.startswith("Access-Control-Allow") for h in headers)


def test_errors_to_the_app_are_readable_cross_origin(gateway, slide):
    status, headers, _ = detect(gateway, slide, {"Origin": APP_ORIGIN})
    assert status == 401
    assert headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    exposed = {h.strip() for h in headers["Access-Control-Expose-Headers"].split(",")}
    assert {"X-Request-Id", "X-Detections-Count", "Retry-After"} <= exposed


def test_responses_to_other_origins_carry_no_allow_origin(gateway, slide):
    _, headers, _ = detect(gateway, slide, {"Origin": "https://evil.example", "X-API-Key": LAB_KEY})
    assert "Access-Control-Allow-Origin" not in headers


# -- fail closed / open ------------------------------------------------------------------------


def test_on_google_cloud_without_auth_detection_fails_closed(slide):
    proc = start_gateway(None, env={"K_SERVICE": "gateway"})
    try:
        status, headers, body = detect(proc, slide)
        doc = assert_json_error(status, headers, body, 503, "auth_not_configured")
        assert "auth" in doc["error"]
        assert send(f"{proc.url}/healthz", method="GET")[0] == 200
    finally:
        proc.stop()


def test_on_google_cloud_explicit_required_false_serves(slide):
    proc = start_gateway({"auth": {"required": False}}, env={"K_SERVICE": "gateway"})
    try:
        assert detect(proc, slide)[0] == 200
    finally:
        proc.stop()


def test_locally_without_auth_is_open_and_says_so_once(slide):
    proc = start_gateway(None)
    try:
        assert detect(proc, slide)[0] == 200
        assert detect(proc, slide)[0] == 200
        records = []
        for line in proc.log_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # functions-framework's own plain lines
        warnings = [
            r
            for r in records
            if isinstance(r, dict)
            and r.get("severity") == "WARNING"
            and "open to anyone" in r.get("message", "")
        ]
        assert len(warnings) == 1, proc.log_text()[-2000:]
    finally:
        proc.stop()


# -- API keys in Firestore, through the gateway ------------------------------------------------


def test_firestore_api_keys_through_the_gateway(
    firestore_emulator, firestore_project, slide, tmp_path
):
    client = firestore_emulator.client(firestore_project)
    client.collection("api_keys").document(sha("fs-key")).set({"id": "fs-script"})
    client.collection("api_keys").document(sha("fs-off")).set({"id": "fs-off", "disabled": True})
    config = {
        "auth": {"api_keys": [], "firestore_timeout_s": 2},
        "usage": {"spool_path": str(tmp_path / "usage-spool.sqlite3")},
    }
    proc = start_gateway(config, env=firestore_emulator.env(firestore_project))
    try:
        status, _, body = detect(proc, slide, {"X-API-Key": "fs-key"})
        assert status == 200, body
        for key in ("fs-off", "fs-missing"):
            status, headers, body = detect(proc, slide, {"X-API-Key": key})
            assert_json_error(status, headers, body, 401, "unauthenticated")
    finally:
        proc.stop()


# -- outbound ID tokens to a private backend ---------------------------------------------------


def test_backend_receives_one_cached_id_token(slide, tmp_path):
    token_key = KeyPair.generate("id-token-key")
    standin = GoogleStandIn()
    standin.state.id_token_key = token_key
    model = start_model_server()
    try:
        standin.state.forward_to = model.url
        backend_url = standin.url + "/backend"
        key_file = standin.service_account_file(str(tmp_path / "sa.json"))
        config = {
            "services": {
                "eos": {
                    "backend": {
                        "url": backend_url,
                        "auth": "google-id-token",
                        "credentials_file": key_file,
                    }
                }
            }
        }
        proc = start_gateway(config)
        try:
            for _ in range(4):
                status, _, body = detect(proc, slide)
                assert status == 200, body
        finally:
            proc.stop()
        seen = standin.state.seen_authorization
        assert len(seen) >= 4 and len(set(seen)) == 1
        scheme, _, token = seen[0].partition(" ")
        assert scheme == "Bearer"
        claims = google_jwt.decode(token, certs=token_key.cert_pem, audience=backend_url)
        assert claims["email"] == SA_EMAIL
        assert standin.state.hits["token"] == 1
    finally:
        model.stop()
        standin.stop()
