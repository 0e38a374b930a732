"""API keys (config and Firestore ``api_keys``), per-service allow lists, fail-closed rules."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import threading

import pytest
from helpers import REPO, sha
from werkzeug.test import EnvironBuilder

from gateway.auth import (
    Authenticator,
    FailClosedAuthenticator,
    OpenAuthenticator,
    build_authenticator,
    principal_matches,
)
from gateway.auth.api_keys import ApiKey, ApiKeyStore, key_hash
from gateway.catalog import parse_config
from gateway.config import ConfigError
from gateway.context import RequestContext
from gateway.errors import AuthNotConfigured, AuthUnavailable, Forbidden, Unauthenticated

LAB_KEY = "lab-key-7b1f0c9e2d4a"
OLD_KEY = "old-key-00aa11bb22cc"


def keys_config(**extra) -> dict:
    auth = {
        "api_keys": [
            {"id": "lab-script", "sha256": sha(LAB_KEY)},
            {"id": "old-script", "sha256": sha(OLD_KEY), "disabled": True},
        ]
    }
    auth.update(extra)
    return {
        "auth": auth,
        "services": {
            "eos": {
                "allow": ["firebase:*", "key:lab-script", "google:web@p.iam.gserviceaccount.com"]
            },
            "open": {},
        },
    }


def call(authn, headers=None, query=None) -> RequestContext:
    request = EnvironBuilder(method="POST", headers=headers or {}, query_string=query).get_request()
    ctx = RequestContext(method="POST", path="/v1/services/eos:detect")
    authn.authenticate(request, ctx)
    return ctx


@pytest.fixture
def authn(monkeypatch):
    monkeypatch.delenv("K_SERVICE", raising=False)
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    return build_authenticator(parse_config(keys_config()))


# -- API keys from the config ----------------------------------------------------------------


def test_key_hash_is_hex_sha256():
    assert key_hash("abc") == hashlib.sha256(b"abc").hexdigest()


def test_valid_key_in_header(authn):
    ctx = call(authn, {"X-API-Key": LAB_KEY})
    assert (ctx.principal, ctx.auth_method) == ("key:lab-script", "api_key")


def test_valid_key_in_query(authn):
    ctx = call(authn, query={"key": LAB_KEY})
    assert ctx.principal == "key:lab-script"


def test_wrong_key(authn):
    with pytest.raises(Unauthenticated, match="invalid API key") as info:
        call(authn, {"X-API-Key": LAB_KEY + "x"})
    assert info.value.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_hash_itself_is_not_a_key(authn):
    with pytest.raises(Unauthenticated):
        call(authn, {"X-API-Key": sha(LAB_KEY)})


def test_disabled_key(authn):
    with pytest.raises(Unauthenticated, match="disabled"):
        call(authn, {"X-API-Key": OLD_KEY})


@pytest.mark.parametrize("key", ["", "   ", "k" * 600])
def test_empty_or_huge_key(authn, key):
    with pytest.raises(Unauthenticated):
        call(authn, {"X-API-Key": key})


def test_bearer_is_refused_when_only_keys_are_configured(authn):
    with pytest.raises(Unauthenticated, match="not accepted"):
        call(authn, {"Authorization": "Bearer abc.def.ghi"})


def test_no_credentials(authn):
    with pytest.raises(Unauthenticated, match="credentials required"):
        call(authn)


@pytest.mark.parametrize(
    "bad",
    [
        {"api_keys": [{"id": "x", "sha256": LAB_KEY}]},  # the key itself, not its hash
        {"api_keys": [{"sha256": sha("k")}]},
        {"api_keys": "abc"},
        {"firebase": {}},
        {"google": {"audiences": []}},
        {"google": {"audiences": "https://x"}},
        {"required": "yes"},
        {"clock_skew_s": -1},
    ],
)
def test_bad_auth_config_is_refused_at_start(bad):
    with pytest.raises(ConfigError):
        build_authenticator(parse_config({"auth": bad}))


def test_config_hash_case_is_normalised(monkeypatch):
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    cfg = {"auth": {"api_keys": [{"id": "up", "sha256": sha(LAB_KEY).upper()}]}}
    assert call(build_authenticator(parse_config(cfg)), {"X-API-Key": LAB_KEY}).principal == (
        "key:up"
    )


# -- API keys from Firestore, with a fake client (unit) ---------------------------------------


class FakeSnapshot:
    def __init__(self, doc_id, data):
        self.id, self._data = doc_id, data

    @property
    def exists(self):
        return self._data is not None

    def to_dict(self):
        return dict(self._data) if self._data is not None else None


class FakeFirestore:
    def __init__(self, docs, fail=None):
        self.docs, self.fail, self.calls = docs, fail, []

    def collection(self, name):
        self._collection = name
        return self

    def document(self, doc_id):
        self._doc = doc_id
        return self

    def get(self, **kwargs):
        self.calls.append((self._collection, self._doc, kwargs))
        if self.fail is not None:
            raise self.fail
        return FakeSnapshot(self._doc, self.docs.get(self._doc))


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_firestore_lookup_with_deadline_and_no_retry():
    fake = FakeFirestore({sha("fs-key"): {"id": "fs-script", "disabled": False}})
    store = ApiKeyStore([], firestore=lambda: fake, timeout_s=1.5)
    assert store.lookup("fs-key") == "fs-script"
    collection, doc, kwargs = fake.calls[0]
    assert (collection, doc) == ("api_keys", sha("fs-key"))
    assert kwargs == {"timeout": 1.5, "retry": None}


def test_firestore_hits_and_misses_are_cached_briefly():
    clock = FakeClock()
    fake = FakeFirestore({sha("fs-key"): {"id": "fs-script"}})
    store = ApiKeyStore([], firestore=lambda: fake, cache_s=60, clock=clock)
    for _ in range(20):
        assert store.lookup("fs-key") == "fs-script"
        with pytest.raises(Unauthenticated):
            store.lookup("nope")
    assert len(fake.calls) == 2
    clock.now += 61
    store.lookup("fs-key")
    assert len(fake.calls) == 3


def test_firestore_disabled_and_malformed_documents():
    fake = FakeFirestore({sha("off"): {"id": "off-script", "disabled": True}, sha("noid"): {}})
    store = ApiKeyStore([], firestore=lambda: fake)
    with pytest.raises(Unauthenticated, match="disabled"):
        store.lookup("off")
    with pytest.raises(Unauthenticated, match="invalid"):
        store.lookup("noid")


def test_unreachable_firestore_is_503_not_401_and_not_cached():
    fake = FakeFirestore({}, fail=TimeoutError("deadline exceeded"))
    store = ApiKeyStore([], firestore=lambda: fake)
    for _ in range(2):
        with pytest.raises(AuthUnavailable) as info:
            store.lookup("some-key")
        assert info.value.status == 503
    assert len(fake.calls) == 2


def test_miss_cache_is_bounded():
    fake = FakeFirestore({})
    store = ApiKeyStore([], firestore=lambda: fake, max_cached=10)
    for i in range(50):
        with pytest.raises(Unauthenticated):
            store.lookup(f"random-{i}")
    assert len(store._cache) == 10


def test_config_keys_win_without_a_firestore_read():
    fake = FakeFirestore({})
    store = ApiKeyStore([ApiKey("cfg", sha("cfg-key"))], firestore=lambda: fake)
    assert store.lookup("cfg-key") == "cfg"
    assert fake.calls == []


# -- API keys from the Firestore emulator (real gRPC) -----------------------------------------


def test_firestore_emulator_api_keys(firestore_emulator, firestore_project, monkeypatch):
    monkeypatch.delenv("K_SERVICE", raising=False)
    client = firestore_emulator.client(firestore_project)
    client.collection("api_keys").document(sha("emu-key")).set({"id": "emu-script"})
    client.collection("api_keys").document(sha("emu-off")).set({"id": "emu-off", "disabled": True})
    authn = build_authenticator(parse_config({"auth": {"api_key_cache_s": 60}}))
    assert authn.keys is not None and authn.keys.uses_firestore
    assert call(authn, {"X-API-Key": "emu-key"}).principal == "key:emu-script"
    with pytest.raises(Unauthenticated, match="disabled"):
        call(authn, {"X-API-Key": "emu-off"})
    with pytest.raises(Unauthenticated, match="invalid"):
        call(authn, {"X-API-Key": "emu-missing"})
    reads = authn.keys.firestore_reads
    for _ in range(10):
        call(authn, {"X-API-Key": "emu-key"})
        with pytest.raises(Unauthenticated):
            call(authn, {"X-API-Key": "emu-missing"})
    assert authn.keys.firestore_reads == reads  # answered from the cache


def test_firestore_emulator_outage_answers_503(firestore_emulator, firestore_project, monkeypatch):
    monkeypatch.delenv("K_SERVICE", raising=False)
    authn = build_authenticator(
        parse_config({"auth": {"firestore_timeout_s": 1, "api_key_cache_s": 60}})
    )
    firestore_emulator.stop()
    try:
        with pytest.raises(AuthUnavailable):
            call(authn, {"X-API-Key": "while-down"})
    finally:
        firestore_emulator.start()


# -- authorization -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "principal", "ok"),
    [
        ("firebase:*", "firebase:abc", True),
        ("firebase:*", "google:abc", False),
        ("key:lab-script", "key:lab-script", True),
        ("key:lab-script", "key:lab-script2", False),
        ("key:lab", "key:lab-script", False),
        ("*", "anonymous", True),
        (
            "google:*@my-project.iam.gserviceaccount.com",
            "google:a@my-project.iam.gserviceaccount.com",
            True,
        ),
        ("google:*@my-project.iam.gserviceaccount.com", "google:a@evil.com", False),
        ("google:a.b@x", "google:aXb@x", False),  # dots are literal
        # Emails compare case-insensitively (as auth.google.emails); nothing else does.
        ("google:Ops@Example.com", "google:ops@example.com", True),
        ("google:ops@example.com", "google:OPS@EXAMPLE.COM", True),
        (
            "google:*@My-Project.iam.gserviceaccount.com",
            "google:A@my-project.iam.gserviceaccount.com",
            True,
        ),
        ("google:ops@example.com", "google:ops@example.comx", False),
        ("key:Lab", "key:lab", False),
        ("firebase:AbC", "firebase:abc", False),
    ],
)
def test_principal_patterns(pattern, principal, ok):
    assert principal_matches(pattern, principal) is ok


def authorize(authn, principal, service="eos"):
    cfg = parse_config(keys_config())
    ctx = RequestContext(method="POST", path="/")
    ctx.principal = principal
    authn.authorize(ctx, cfg.services[service])


def test_allowed_principals(authn):
    authorize(authn, "firebase:alice")
    authorize(authn, "key:lab-script")
    authorize(authn, "google:web@p.iam.gserviceaccount.com")


def test_principal_not_on_allow_list_is_403(authn):
    with pytest.raises(Forbidden) as info:
        authorize(authn, "key:other-script")
    assert info.value.status == 403 and "eos" in info.value.message


def test_service_without_allow_list_accepts_any_principal(authn):
    authorize(authn, "key:other-script", service="open")


# -- fail closed / open -----------------------------------------------------------------------


def test_no_auth_on_google_cloud_fails_closed(monkeypatch):
    monkeypatch.setenv("K_SERVICE", "gateway")
    authn = build_authenticator(parse_config({}))
    assert isinstance(authn, FailClosedAuthenticator)
    with pytest.raises(AuthNotConfigured) as info:
        call(authn, {"X-API-Key": LAB_KEY})
    assert (info.value.status, info.value.code) == (503, "auth_not_configured")
    assert "auth" in info.value.message


def test_explicit_required_false_on_google_cloud_is_open(monkeypatch):
    monkeypatch.setenv("K_SERVICE", "gateway")
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    authn = build_authenticator(parse_config({"auth": {"required": False}}))
    ctx = call(authn)
    assert (ctx.principal, ctx.auth_method) == ("anonymous", "none")


def test_required_false_still_checks_presented_credentials(monkeypatch):
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    authn = build_authenticator(parse_config(keys_config(required=False)))
    assert call(authn).principal == "anonymous"
    assert call(authn, {"X-API-Key": LAB_KEY}).principal == "key:lab-script"
    with pytest.raises(Unauthenticated):
        call(authn, {"X-API-Key": "wrong"})


def test_required_auth_that_admits_no_caller_stops_the_start(monkeypatch):
    """No token verifier and no key anywhere: every request would be refused."""
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    with pytest.raises(ConfigError, match="auth admits no caller"):
        build_authenticator(parse_config({"auth": {"required": True, "api_keys": []}}))


def test_local_without_auth_is_open(monkeypatch):
    monkeypatch.delenv("K_SERVICE", raising=False)
    authn = build_authenticator(parse_config({}))
    assert isinstance(authn, OpenAuthenticator)
    assert call(authn).principal == "anonymous"


def test_auth_section_means_credentials_are_required(monkeypatch):
    monkeypatch.setenv("K_SERVICE", "gateway")
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    authn = build_authenticator(parse_config(keys_config()))
    assert isinstance(authn, Authenticator) and authn.required
    with pytest.raises(Unauthenticated):
        call(authn)


def run_python(code: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.process
def test_open_default_warns_once_and_never_imports_google_auth():
    done = run_python(
        """
        import sys
        from werkzeug.test import EnvironBuilder
        from gateway.auth import build_authenticator
        from gateway.catalog import parse_config
        from gateway.context import RequestContext
        for _ in range(3):
            authn = build_authenticator(parse_config({}))
        ctx = RequestContext(method="POST", path="/")
        authn.authenticate(EnvironBuilder(method="POST").get_request(), ctx)
        keys = build_authenticator(parse_config(
            {"auth": {"firebase": {"project_id": "p"}, "google": {"audiences": ["a"]}}}))
        print("IMPORTED" if "google.auth" in sys.modules else "NOT-IMPORTED", ctx.principal)
        """,
        {"LOG_FORMAT": "json"},
    )
    assert done.returncode == 0, done.stderr
    *log_lines, last = done.stdout.strip().splitlines()
    warnings = [json.loads(line) for line in log_lines]
    warnings = [w for w in warnings if w["severity"] == "WARNING"]
    assert len(warnings) == 1 and "open to anyone" in warnings[0]["message"], done.stdout
    assert last == "NOT-IMPORTED anonymous"


def test_hung_firestore_does_not_hang_the_request(
    firestore_emulator, firestore_project, monkeypatch
):
    monkeypatch.delenv("K_SERVICE", raising=False)
    authn = build_authenticator(parse_config({"auth": {"firestore_timeout_s": 1}}))
    call_result: list = []

    def attempt():
        try:
            call(authn, {"X-API-Key": "while-hung"})
            call_result.append("accepted")
        except Exception as exc:  # noqa: BLE001 - the type is asserted below
            call_result.append(exc)

    firestore_emulator.pause()
    try:
        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        worker.join(30)  # a bound for the test run, far above the 1 s deadline
        assert not worker.is_alive(), "the API key lookup ignored its deadline"
    finally:
        firestore_emulator.resume()
    assert isinstance(call_result[0], AuthUnavailable)
