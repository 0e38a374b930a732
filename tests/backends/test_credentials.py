"""Outbound ID tokens (``backend.auth: google-id-token``) from a key file and a metadata server.

The token endpoint and the metadata server are the local stand-in; it verifies the key
file's signed assertion like Google does and hands out real RS256 ID tokens, so the tests
check the tokens' audience and signature, and count how often the gateway asked.
"""

from __future__ import annotations

import textwrap
import threading
import time

import pytest
from certserver import SA_EMAIL, GoogleStandIn, KeyPair
from google.auth import jwt as google_jwt
from helpers import run_on_google_cloud

from gateway.backends.credentials import IdTokenSource
from gateway.errors import BackendUnavailable

BACKEND = "https://model-abc-uc.a.run.app"


@pytest.fixture(scope="module")
def token_key():
    return KeyPair.generate("id-token-key")


@pytest.fixture
def standin(token_key):
    server = GoogleStandIn()
    server.state.id_token_key = token_key
    yield server
    server.stop()


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def claims_of(header: str, token_key: KeyPair) -> dict:
    scheme, _, token = header.partition(" ")
    assert scheme == "Bearer"
    return google_jwt.decode(token, certs=token_key.cert_pem, audience=BACKEND)


def test_key_file_token_fetched_once_for_many_calls(standin, token_key, tmp_path):
    key_file = standin.service_account_file(str(tmp_path / "sa.json"))
    source = IdTokenSource(BACKEND, key_file)
    assert standin.state.hits["token"] == 0  # nothing fetched before the first call
    headers = set()

    def worker():
        for _ in range(25):
            headers.add(source.authorization_header())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(headers) == 1
    assert standin.state.hits["token"] == 1
    claims = claims_of(headers.pop(), token_key)
    assert claims["aud"] == BACKEND and claims["email"] == SA_EMAIL


def test_refreshed_before_expiry(standin, token_key, tmp_path):
    key_file = standin.service_account_file(str(tmp_path / "sa.json"))
    clock = Clock()
    source = IdTokenSource(BACKEND, key_file, refresh_margin_s=300, clock=clock)
    first = source.authorization_header()
    clock.now += 3600 - 400  # still outside the refresh margin
    assert source.authorization_header() == first
    assert standin.state.hits["token"] == 1
    clock.now += 200  # inside the last five minutes
    source.authorization_header()
    assert standin.state.hits["token"] == 2
    assert source.refreshes == 2


def test_failed_refresh_keeps_the_valid_token(standin, token_key, tmp_path):
    key_file = standin.service_account_file(str(tmp_path / "sa.json"))
    clock = Clock()
    source = IdTokenSource(BACKEND, key_file, clock=clock, retry_after_failure_s=5)
    first = source.authorization_header()
    standin.stop()
    clock.now += 3600 - 100  # due for refresh, not yet expired
    assert source.authorization_header() == first
    assert source.authorization_header() == first  # no retry storm: backs off
    clock.now += 200  # expired now, and the token endpoint is still down
    with pytest.raises(BackendUnavailable) as info:
        source.authorization_header()
    assert (info.value.status, info.value.code) == (503, "backend_auth_failed")


def test_missing_key_file_is_a_clear_503(tmp_path):
    source = IdTokenSource(BACKEND, str(tmp_path / "absent.json"))
    with pytest.raises(BackendUnavailable, match="credentials for the backend"):
        source.authorization_header()


def test_google_application_credentials(standin, token_key, tmp_path, monkeypatch):
    key_file = standin.service_account_file(str(tmp_path / "adc.json"))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", key_file)
    source = IdTokenSource(BACKEND)
    for _ in range(5):
        header = source.authorization_header()
    assert claims_of(header, token_key)["aud"] == BACKEND
    assert standin.state.hits["token"] == 1


@pytest.mark.process
def test_metadata_server(standin, token_key):
    """As on Google Cloud: no key file, the metadata server's identity endpoint."""
    script = textwrap.dedent(
        f"""
        from gateway.backends.credentials import IdTokenSource
        source = IdTokenSource({BACKEND!r})
        headers = {{source.authorization_header() for _ in range(20)}}
        assert len(headers) == 1
        print(headers.pop())
        """
    )
    claims = claims_of(run_on_google_cloud(script, standin.host, 60), token_key)
    assert claims["aud"] == BACKEND
    assert standin.state.hits["metadata:identity"] == 1
