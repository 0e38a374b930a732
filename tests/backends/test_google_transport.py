"""google-auth's token flows through the gateway's transport adapter, against the local
stand-in for Google's endpoints (``tests/certserver.py``): a service-account key file whose
``token_uri`` is the stand-in, for an OAuth access token and an ID token; refusals and
unreachable endpoints as google-auth expects them."""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections.abc import Iterator

import pytest
from certserver import SA_EMAIL, GoogleStandIn, KeyPair
from google.auth import exceptions
from google.auth import jwt as google_jwt
from google.oauth2 import service_account

from gateway.backends.google_transport import Request

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
AUDIENCE = "https://model-abc-uc.a.run.app"


@pytest.fixture
def standin() -> Iterator[GoogleStandIn]:
    server = GoogleStandIn()
    server.state.id_token_key = KeyPair.generate("id-token-key")
    yield server
    server.stop()


def test_a_service_account_access_token(standin, tmp_path):
    key_file = standin.service_account_file(str(tmp_path / "sa.json"))
    credentials = service_account.Credentials.from_service_account_file(key_file, scopes=[SCOPE])
    transport = Request()
    credentials.refresh(transport)
    assert standin.state.access_tokens[credentials.token] == (SA_EMAIL, SCOPE)
    lifetime = credentials.expiry - dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert dt.timedelta(minutes=55) < lifetime <= dt.timedelta(hours=1)
    assert credentials.valid
    credentials.refresh(transport)  # the same adapter again: a new token
    assert len(standin.state.access_tokens) == 2
    assert standin.state.hits["token"] == 2


def test_a_service_account_id_token(standin, tmp_path):
    key_file = standin.service_account_file(str(tmp_path / "sa.json"))
    credentials = service_account.IDTokenCredentials.from_service_account_file(
        key_file, target_audience=AUDIENCE
    )
    credentials.refresh(Request())
    claims = google_jwt.decode(
        credentials.token, certs=standin.state.id_token_key.cert_pem, audience=AUDIENCE
    )
    assert claims["email"] == SA_EMAIL


def test_a_refusal_of_the_token_endpoint_reaches_google_auth(standin, tmp_path):
    """A key the endpoint does not know: its 400 comes back as google-auth's RefreshError."""
    key_file = standin.service_account_file(str(tmp_path / "sa.json"))
    standin.state.service_accounts.clear()
    credentials = service_account.Credentials.from_service_account_file(key_file, scopes=[SCOPE])
    with pytest.raises(exceptions.RefreshError):
        credentials.refresh(Request())
    assert standin.state.access_tokens == {}


def test_an_answer_as_google_auth_reads_it(standin):
    answer = Request()(f"{standin.url}/certs/google", timeout=5)
    assert answer.status == 200 and json.loads(answer.data) == {}
    assert answer.headers.get("content-type") == "application/json; charset=UTF-8"
    assert answer.headers.get("Cache-Control").startswith("public, max-age=")


def test_no_answer_is_a_transport_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with pytest.raises(exceptions.TransportError):
        Request()(f"http://127.0.0.1:{closed}/token", method="POST", body="a=b", timeout=5)
    with socket.socket() as silent:  # connects, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        with pytest.raises(exceptions.TransportError):
            Request()(f"http://127.0.0.1:{silent.getsockname()[1]}/", timeout=(5, 0.3))
    with pytest.raises(exceptions.TransportError):
        Request()("metadata.google.internal/computeMetadata/v1/")  # no scheme
