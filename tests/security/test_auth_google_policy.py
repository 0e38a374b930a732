"""Google-signed callers: any Google account of any project can get an ID token for the
gateway's audience, so one is admitted only where ``auth.google.emails`` or a service's
``allow`` names it; ``emails: ["*"]`` opens it on purpose.  Tokens signed with real RSA
keys, certificates served locally, the gateway as its own process."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from certserver import (
    GATEWAY_AUDIENCE,
    SA_EMAIL,
    GoogleStandIn,
    KeyPair,
    google_claims,
)
from procs import start_gateway

# Every test here runs the gateway (or the CLI) as its own process.
pytestmark = pytest.mark.process

STRANGER = "someone@another-project.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair.generate("g-1")


@pytest.fixture(scope="module")
def standin(key):
    server = GoogleStandIn()
    server.state.certs = {"google": [key]}
    yield server
    server.stop()


def _gateway(standin: GoogleStandIn, emails: list[str] | None):
    google = {"audiences": [GATEWAY_AUDIENCE]}
    if emails is not None:
        google["emails"] = emails
    config = {
        "auth": {"google": google, "certs_urls": {"google": standin.certs_url("google")}},
        "services": {"open": {}, "named": {"allow": [f"google:{SA_EMAIL}"]}},
    }
    return start_gateway(config)


def status_of(gateway, service: str, token: str) -> int:
    """403 when refused; admitted callers get the 400 of an empty body."""
    req = urllib.request.Request(
        f"{gateway.url}/v1/services/{service}:detect",
        data=b"",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_without_emails_only_services_that_name_the_caller_admit_it(standin, key):
    gateway = _gateway(standin, emails=None)
    try:
        ours = key.sign(google_claims(email=SA_EMAIL))
        stranger = key.sign(google_claims(email=STRANGER))
        assert status_of(gateway, "open", stranger) == 403
        assert status_of(gateway, "open", ours) == 403
        assert status_of(gateway, "named", ours) == 400  # admitted
        assert status_of(gateway, "named", stranger) == 403
        log = gateway.log_text()
    finally:
        gateway.stop()
    policy = [json.loads(x) for x in log.splitlines() if "auth.google:" in x]
    assert policy and "only on services whose allow names them" in policy[0]["message"]
    assert "named" in policy[0]["message"]


def test_an_emails_list_admits_the_listed_accounts(standin, key):
    gateway = _gateway(standin, emails=[SA_EMAIL])
    try:
        assert status_of(gateway, "open", key.sign(google_claims(email=SA_EMAIL))) == 400
        assert status_of(gateway, "open", key.sign(google_claims(email=STRANGER))) == 401
    finally:
        gateway.stop()


def test_star_opens_it_explicitly_and_says_so(standin, key):
    gateway = _gateway(standin, emails=["*"])
    try:
        assert status_of(gateway, "open", key.sign(google_claims(email=STRANGER))) == 400
        log = gateway.log_text()
    finally:
        gateway.stop()
    assert any("any Google account is admitted" in line for line in log.splitlines())
