"""The certificate cache: Cache-Control honoured, rotation picked up, fetches bounded."""

from __future__ import annotations

import base64
import threading

import pytest
from certserver import GoogleStandIn, KeyPair

from gateway.auth.certs import CertCache, cache_lifetime
from gateway.errors import AuthUnavailable


class FakeClock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def keys():
    return [KeyPair.generate(f"k{i}") for i in range(3)]


@pytest.fixture
def server(keys):
    standin = GoogleStandIn()
    standin.state.certs = {"google": [keys[0]]}
    standin.state.max_age = 600
    yield standin
    standin.stop()


@pytest.mark.parametrize(
    ("cache_control", "age", "expected"),
    [
        ("public, max-age=19845, must-revalidate, no-transform", None, 19845),
        ("public, max-age=19845", "845", 19000),
        ("max-age=5", None, 60),  # below the floor
        ("no-cache", None, 60),
        (None, None, 60),
        ("public, max-age=9999999", None, 24 * 3600),  # capped
        ("public, max-age=100", "garbage", 100),
    ],
)
def test_cache_lifetime(cache_control, age, expected):
    assert cache_lifetime(cache_control, age, floor_s=60) == expected


def test_max_age_is_honoured(server, keys):
    clock = FakeClock()
    cache = CertCache(server.certs_url("google"), clock=clock)
    for _ in range(100):
        assert cache.verifier("k0") is not None
    assert server.state.hits["certs:google"] == 1
    clock.now += 599
    assert cache.verifier("k0") is not None
    assert server.state.hits["certs:google"] == 1
    clock.now += 2
    assert cache.verifier("k0") is not None
    assert server.state.hits["certs:google"] == 2


def test_rotation_is_picked_up_at_most_once_per_interval(server, keys):
    clock = FakeClock()
    cache = CertCache(server.certs_url("google"), clock=clock, min_refetch_s=60)
    assert cache.verifier("k0") is not None
    server.state.certs["google"] = [keys[0], keys[1]]  # Google publishes a new key
    clock.now += 10
    assert cache.verifier("k1") is None  # too soon after the last fetch: no download
    assert server.state.hits["certs:google"] == 1
    clock.now += 60
    assert cache.verifier("k1") is not None  # one refetch for the unknown kid
    assert server.state.hits["certs:google"] == 2
    for i in range(20):
        assert cache.verifier(f"bogus-{i}") is None
    assert server.state.hits["certs:google"] == 2


def test_verifier_checks_signatures(server, keys):
    cache = CertCache(server.certs_url("google"))
    token = keys[0].sign({"iss": "x", "iat": 1, "exp": 2})
    head, payload, sig = token.split(".")
    signature = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    verifier = cache.verifier("k0")
    assert verifier.verify(f"{head}.{payload}".encode(), signature)
    assert not verifier.verify(f"{head}.{payload}x".encode(), signature)


def test_unreachable_endpoint_without_keys_is_503():
    cache = CertCache("http://127.0.0.1:9/certs", timeout_s=1)
    with pytest.raises(AuthUnavailable) as info:
        cache.verifier("k0")
    assert info.value.status == 503


def test_failed_refresh_keeps_the_previous_keys(server, keys):
    clock = FakeClock()
    cache = CertCache(server.certs_url("google"), clock=clock, min_refetch_s=60)
    assert cache.verifier("k0") is not None
    server.stop()
    clock.now += 601  # stale: a refresh is attempted and fails
    assert cache.verifier("k0") is not None
    assert cache.fetches == 2
    clock.now += 30
    assert cache.verifier("k0") is not None
    assert cache.fetches == 2  # no retry before min_refetch_s


@pytest.mark.parametrize("body", [b"not json", b"[]", b"{}", b'{"k": 42}', b'{"k": "not a pem"}'])
def test_malformed_certificate_documents(body):
    cache = CertCache("http://unused", fetch=lambda url, timeout: (body, {}))
    with pytest.raises(AuthUnavailable):
        cache.verifier("k")


def test_concurrent_cold_start_fetches_once(server, keys):
    cache = CertCache(server.certs_url("google"))
    results = []

    def worker():
        for _ in range(20):
            results.append(cache.verifier("k0") is not None)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(results) and len(results) == 160
    assert server.state.hits["certs:google"] == 1
