"""Bearer tokens through the authenticator, with real RSA keys and a real certificate server.

The authenticator runs in-process here; the same paths through a running gateway are in
tests/gateway/test_auth_gateway.py.  Certificates are fetched over a socket from the local
stand-in.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from certserver import (
    FIREBASE_PROJECT,
    GATEWAY_AUDIENCE,
    SA_EMAIL,
    GoogleStandIn,
    b64url,
    firebase_claims,
    google_claims,
    jws,
)
from werkzeug.test import EnvironBuilder

from gateway.auth import build_authenticator
from gateway.catalog import parse_config
from gateway.context import RequestContext
from gateway.errors import Unauthenticated


def auth_config(standin: GoogleStandIn, **over) -> dict:
    auth = {
        "firebase": {"project_id": FIREBASE_PROJECT},
        "google": {"audiences": [GATEWAY_AUDIENCE], "emails": [SA_EMAIL]},
        "certs_urls": {
            "firebase": standin.certs_url("firebase"),
            "google": standin.certs_url("google"),
        },
        "clock_skew_s": 10,
    }
    auth.update(over)
    return {"auth": auth}


@pytest.fixture(scope="module")
def authn(standin):
    return build_authenticator(parse_config(auth_config(standin)))


def call(authn, token: str | None = None, headers: dict | None = None) -> RequestContext:
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = EnvironBuilder(method="POST", headers=headers).get_request()
    ctx = RequestContext(method="POST", path="/v1/services/eos:detect")
    authn.authenticate(request, ctx)
    return ctx


def rejected(authn, token: str | None, headers: dict | None = None) -> str:
    with pytest.raises(Unauthenticated) as info:
        call(authn, token, headers)
    assert info.value.status == 401
    assert info.value.headers["WWW-Authenticate"].startswith("Bearer")
    return info.value.message


def test_valid_firebase_token(authn, keys):
    ctx = call(authn, keys["fb-1"].sign(firebase_claims(uid="alice")))
    assert (ctx.principal, ctx.auth_method) == ("firebase:alice", "firebase")


def test_valid_google_token(authn, keys):
    ctx = call(authn, keys["g-1"].sign(google_claims()))
    assert (ctx.principal, ctx.auth_method) == (f"google:{SA_EMAIL}", "google")


def test_google_issuer_without_scheme_accepted(authn, keys):
    ctx = call(authn, keys["g-1"].sign(google_claims(iss="accounts.google.com")))
    assert ctx.principal == f"google:{SA_EMAIL}"


def without(claims: dict, name: str) -> dict:
    del claims[name]
    return claims


# What a token signed by a key of the stand-in claims, given the time now; a word of its refusal.
REFUSED_CLAIMS = {
    "expired": ("fb-1", lambda now: firebase_claims(iat=now - 7200, exp=now - 3600), "expired"),
    "issued_later": ("fb-1", lambda now: firebase_claims(iat=now + 120, exp=now + 3720), "future"),
    "nbf_later": ("g-1", lambda now: google_claims(nbf=now + 120), "not valid yet"),
    "auth_time_later": ("fb-1", lambda now: firebase_claims(auth_time=now + 120), "sign-in time"),
    "no_auth_time": ("fb-1", lambda now: without(firebase_claims(), "auth_time"), "auth_time"),
    "no_exp": ("g-1", lambda now: without(google_claims(), "exp"), "exp"),
    "firebase_audience": ("fb-1", lambda now: firebase_claims(aud="someone-else"), "audience"),
    "google_audience": (
        "g-1",
        lambda now: google_claims(audience="https://other-service"),
        "audience",
    ),
    "issuer": ("g-1", lambda now: google_claims(iss="https://evil.example"), "issuer"),
    "other_project": ("fb-1", lambda now: firebase_claims(project="other-project"), "issuer"),
    # A key from the other certificate set: Firebase tokens are checked only against
    # securetoken's certificates.
    "google_key": ("g-1", lambda now: firebase_claims(), "unknown key"),
    "email": (
        "g-1",
        lambda now: google_claims(email="intruder@example.iam.gserviceaccount.com"),
        "account not accepted",
    ),
    "unverified": ("g-1", lambda now: google_claims(email_verified=False), "not verified"),
    "no_email": ("g-1", lambda now: without(google_claims(), "email"), "email"),
}


@pytest.mark.parametrize(("key", "claims", "refusal"), REFUSED_CLAIMS.values(), ids=REFUSED_CLAIMS)
def test_claims_refused(authn, keys, key, claims, refusal):
    token = keys[key].sign(claims(int(time.time())))
    assert refusal in rejected(authn, token)


def test_expiry_within_clock_skew_accepted(authn, keys):
    now = int(time.time())
    ctx = call(authn, keys["fb-1"].sign(firebase_claims(iat=now - 3600, exp=now - 3)))
    assert ctx.auth_method == "firebase"


@pytest.mark.parametrize("sub", ["", None, 42, "x" * 129])
def test_invalid_firebase_subject(authn, keys, sub):
    claims = firebase_claims()
    if sub is None:
        del claims["sub"]
    else:
        claims["sub"] = sub
    assert "subject" in rejected(authn, keys["fb-1"].sign(claims))


def test_alg_none(authn, keys):
    token = jws({"alg": "none", "kid": "fb-1", "typ": "JWT"}, firebase_claims())
    assert "algorithm" in rejected(authn, token)


@pytest.mark.parametrize("material", ["cert_pem", "public_pem"])
def test_hs256_signed_with_the_public_key(authn, keys, material):
    header = {"alg": "HS256", "kid": "fb-1", "typ": "JWT"}
    unsigned = jws(header, firebase_claims()).rsplit(".", 1)[0]
    secret = getattr(keys["fb-1"], material).encode()
    signature = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
    assert "algorithm" in rejected(authn, unsigned + "." + b64url(signature))


def test_unknown_kid(authn, keys):
    token = keys["rogue"].sign(firebase_claims())
    assert "unknown key" in rejected(authn, token)


def test_known_kid_but_other_key(authn, keys):
    token = keys["rogue"].sign(firebase_claims(), kid="fb-1")
    assert rejected(authn, token) == "bearer token rejected: invalid signature"


def test_tampered_payload(authn, keys):
    header, _, signature = keys["fb-1"].sign(firebase_claims(uid="alice")).split(".")
    forged = b64url(json.dumps(firebase_claims(uid="admin")).encode())
    assert "invalid signature" in rejected(authn, f"{header}.{forged}.{signature}")


def test_tampered_signature(authn, keys):
    header, payload, signature = keys["fb-1"].sign(firebase_claims()).split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    assert "invalid signature" in rejected(authn, f"{header}.{payload}.{flipped}")


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b.c",
        "..",
        "e30.e30",
        "e30.e30.e30.e30",
        b64url(b"not json") + "." + b64url(b"{}") + ".",
        b64url(b"[1, 2]") + "." + b64url(b"{}") + "." + b64url(b"x"),
        "eyJhbGciOiJSUzI1NiJ9.%%%.abc",
        "ünïcödé.ünïcödé.ünïcödé",
    ],
)
def test_garbage_tokens(authn, token):
    message = rejected(authn, token)
    assert message in ("bearer token rejected: malformed token",) or "algorithm" in message


def test_garbage_header_names_no_key(authn):
    token = jws({"alg": "RS256"}, firebase_claims(), b"sig")
    assert "no signing key" in rejected(authn, token)


def test_oversized_token_is_refused_before_parsing(authn, standin):
    before = sum(standin.state.hits.values())
    token = "x" * 20_000  # not even a JWT: it must not get as far as being parsed
    assert "longer than" in rejected(authn, token)
    assert sum(standin.state.hits.values()) == before


def test_missing_credentials(authn):
    assert "credentials required" in rejected(authn, None)


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "Token abc"])
def test_unsupported_authorization_header(authn, value):
    assert "Authorization" in rejected(authn, None, {"Authorization": value})


def test_messages_do_not_leak_token_content(authn, keys):
    token = keys["rogue"].sign(firebase_claims(uid="secret-uid"), kid="fb-1")
    message = rejected(authn, token)
    assert "secret-uid" not in message and token[:20] not in message


def test_google_only_config_refuses_firebase_tokens(standin, keys):
    cfg = auth_config(standin)
    del cfg["auth"]["firebase"]
    authn = build_authenticator(parse_config(cfg))
    assert "issuer" in rejected(authn, keys["fb-1"].sign(firebase_claims()))
    assert call(authn, keys["g-1"].sign(google_claims())).auth_method == "google"


def test_google_any_email_when_no_allow_list(standin, keys):
    cfg = auth_config(standin)
    del cfg["auth"]["google"]["emails"]
    authn = build_authenticator(parse_config(cfg))
    ctx = call(authn, keys["g-1"].sign(google_claims(email="other@example.org")))
    assert ctx.principal == "google:other@example.org"


def test_warm_cache_makes_no_network_calls(standin, keys):
    authn = build_authenticator(parse_config(auth_config(standin)))
    before = standin.state.hits.copy()
    for i in range(50):
        call(authn, keys["fb-1"].sign(firebase_claims(uid=f"u{i}")))
        call(authn, keys["g-1"].sign(google_claims()))
    assert standin.state.hits["certs:firebase"] - before["certs:firebase"] == 1
    assert standin.state.hits["certs:google"] - before["certs:google"] == 1


def test_unknown_kids_cannot_force_a_fetch_per_request(standin, keys):
    authn = build_authenticator(parse_config(auth_config(standin)))
    call(authn, keys["fb-1"].sign(firebase_claims()))
    before = standin.state.hits["certs:firebase"]
    for i in range(30):
        rejected(authn, keys["rogue"].sign(firebase_claims(), kid=f"made-up-{i}"))
    assert standin.state.hits["certs:firebase"] - before <= 1
