"""A local stand-in for the Google endpoints that authentication talks to.

One threaded HTTP server on 127.0.0.1 plays, over a real socket:

* the certificate endpoints (``/certs/<name>``: JSON map kid -> X.509 PEM, with
  ``Cache-Control: public, max-age=...`` as Google sends it);
* the metadata server's identity and access token endpoints (reached through
  ``GCE_METADATA_HOST``);
* the OAuth token endpoint a service-account key file's ``token_uri`` points at: an ID
  token for an assertion naming a ``target_audience``, else an access token for its
  ``scope``;
* a backend that records the ``Authorization`` headers it receives and passes the request
  on to a real model server (``forward_to``).

Every endpoint counts its hits so tests can assert how often the gateway called out.
Keys are real RSA keys and certificates made with ``cryptography``; tokens are signed with
google-auth's ``RSASigner``, exactly as Google's are (RS256, ``kid`` header).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID
from google.auth import crypt
from google.auth import jwt as google_jwt

FIREBASE_PROJECT = "my-project"
GATEWAY_AUDIENCE = "https://my-gateway-url"
SA_EMAIL = "web-backend@my-project.iam.gserviceaccount.com"
METADATA_EMAIL = "gateway@my-project.iam.gserviceaccount.com"


@dataclass
class KeyPair:
    kid: str
    private_pem: str
    cert_pem: str
    public_pem: str
    # Loading a private key checks it, which costs more than signing: loaded once.
    _key: rsa.RSAPrivateKey | None = field(default=None, repr=False, compare=False)

    @classmethod
    def generate(cls, kid: str) -> KeyPair:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = self_signed_certificate(key, kid, days=2)
        return cls(
            kid=kid,
            private_pem=private_pem(key).decode(),
            cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
            public_pem=key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode(),
        )

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        if self._key is None:
            self._key = serialization.load_pem_private_key(self.private_pem.encode(), None)
        signer = crypt.RSASigner(self._key, key_id=kid or self.kid)
        token = google_jwt.encode(signer, claims)
        return token.decode() if isinstance(token, bytes) else token


def self_signed_certificate(
    key: CertificateIssuerPrivateKeyTypes,
    common_name: str,
    *,
    days: int,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> x509.Certificate:
    """A certificate that is its own issuer, valid from a day ago to ``days`` days ahead, so
    a clock a little off does not fail it; ``extensions``: (extension, critical) pairs."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key, hashes.SHA256())


def private_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """The unencrypted PKCS#8 PEM of ``key``, as key files and servers load it."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jws(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A hand-built compact JWS, for the malformed cases google-auth refuses to produce."""
    return ".".join(
        [
            b64url(json.dumps(header).encode()),
            b64url(json.dumps(claims).encode()),
            b64url(signature),
        ]
    )


def firebase_claims(uid: str = "user-1", project: str = FIREBASE_PROJECT, **over: Any) -> dict:
    now = int(time.time())
    claims = {
        "iss": f"https://securetoken.google.com/{project}",
        "aud": project,
        "auth_time": now - 60,
        "user_id": uid,
        "sub": uid,
        "iat": now - 30,
        "exp": now + 3600,
        "email": f"{uid}@example.org",
        "email_verified": True,
        "firebase": {"identities": {}, "sign_in_provider": "password"},
    }
    claims.update(over)
    return claims


def google_claims(
    email: str = SA_EMAIL, audience: str = GATEWAY_AUDIENCE, **over: Any
) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "https://accounts.google.com",
        "aud": audience,
        "azp": "1234567890",
        "sub": "1234567890",
        "email": email,
        "email_verified": True,
        "iat": now - 30,
        "exp": now + 3600,
    }
    claims.update(over)
    return claims


@dataclass
class StandIn:
    """State behind the server: key sets per certificate endpoint and hit counters."""

    certs: dict[str, list[KeyPair]] = field(default_factory=dict)
    max_age: int = 3600
    id_token_key: KeyPair | None = None
    id_token_lifetime_s: int = 3600
    service_accounts: dict[str, KeyPair] = field(default_factory=dict)  # email -> key
    hits: Counter = field(default_factory=Counter)
    seen_authorization: list[str] = field(default_factory=list)
    access_tokens: dict[str, tuple[str, str]] = field(default_factory=dict)  # -> (email, scope)
    access_token_lifetime_s: int = 3600
    forward_to: str | None = None  # backend requests are passed on to this URL when set
    lock: threading.Lock = field(default_factory=threading.Lock)

    def issue_id_token(self, audience: str, email: str) -> str:
        assert self.id_token_key is not None
        now = int(time.time())
        return self.id_token_key.sign(
            google_claims(
                email=email, audience=audience, iat=now, exp=now + self.id_token_lifetime_s
            )
        )


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:
        return None

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _count(self, name: str) -> None:
        with self.server.state.lock:
            self.server.state.hits[name] += 1

    def do_GET(self) -> None:
        state = self.server.state
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path.startswith("/certs/"):
            name = url.path.removeprefix("/certs/")
            self._count(f"certs:{name}")
            keys = {k.kid: k.cert_pem for k in state.certs.get(name, [])}
            self._send(
                200,
                json.dumps(keys).encode(),
                {
                    "Content-Type": "application/json; charset=UTF-8",
                    "Cache-Control": f"public, max-age={state.max_age}, must-revalidate",
                },
            )
        elif url.path in ("", "/"):  # metadata server ping (GCE_METADATA_IP)
            self._count("metadata:ping")
            self._send(200, b"ok", {"Metadata-Flavor": "Google"})
        elif url.path == "/computeMetadata/v1/instance/service-accounts/default/":
            self._count("metadata:info")
            info = {"email": METADATA_EMAIL, "aliases": ["default"], "scopes": []}
            self._send(
                200,
                json.dumps(info).encode(),
                {"Metadata-Flavor": "Google", "Content-Type": "application/json"},
            )
        elif url.path == "/computeMetadata/v1/instance/service-accounts/default/identity":
            if self.headers.get("Metadata-Flavor") != "Google":
                self._send(403, b"missing Metadata-Flavor", {})
                return
            self._count("metadata:identity")
            token = state.issue_id_token(query.get("audience", ""), METADATA_EMAIL)
            self._send(
                200,
                token.encode(),
                {"Metadata-Flavor": "Google", "Content-Type": "application/text"},
            )
        elif url.path == "/computeMetadata/v1/instance/service-accounts/default/token":
            if self.headers.get("Metadata-Flavor") != "Google":
                self._send(403, b"missing Metadata-Flavor", {})
                return
            self._count("metadata:token")
            with state.lock:
                token = f"ya29.metadata-{len(state.access_tokens) + 1}"
                state.access_tokens[token] = (METADATA_EMAIL, query.get("scopes", ""))
            answer = {
                "access_token": token,
                "expires_in": state.access_token_lifetime_s,
                "token_type": "Bearer",
            }
            self._send(
                200,
                json.dumps(answer).encode(),
                {"Metadata-Flavor": "Google", "Content-Type": "application/json"},
            )
        elif url.path.startswith("/backend"):
            self._backend(None)
        else:
            self._send(404, b"not found", {})

    def _backend(self, body: bytes | None) -> None:
        """Record the caller's Authorization header, then answer as the real backend would."""
        state = self.server.state
        self._count("backend")
        with state.lock:
            state.seen_authorization.append(self.headers.get("Authorization") or "")
        if state.forward_to is None:
            self._send(200, b"{}", {"Content-Type": "application/json"})
            return
        target = state.forward_to + self.path.removeprefix("/backend")
        headers = {"Content-Type": self.headers.get("Content-Type") or "application/json"}
        req = urllib.request.Request(target, data=body, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, data = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
        self._send(status, data, {"Content-Type": "application/json"})

    def do_POST(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path == "/token":
            self._count("token")
            form = dict(urllib.parse.parse_qsl(body.decode()))
            assertion = form.get("assertion", "")
            try:
                claims = google_jwt.decode(assertion, verify=False)
                key = state.service_accounts[claims["iss"]]
                claims = google_jwt.decode(assertion, certs=key.cert_pem, audience=claims["aud"])
            except Exception as exc:  # an assertion we cannot verify is refused, as Google does
                self._send(400, json.dumps({"error": str(exc)}).encode(), {})
                return
            if "target_audience" in claims:
                token = state.issue_id_token(claims["target_audience"], claims["iss"])
                answer: dict[str, Any] = {"id_token": token}
            else:
                with state.lock:
                    token = f"ya29.stand-in-{len(state.access_tokens) + 1}"
                    state.access_tokens[token] = (claims["iss"], claims.get("scope", ""))
                answer = {
                    "access_token": token,
                    "expires_in": state.access_token_lifetime_s,
                    "token_type": "Bearer",
                }
            self._send(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})
        elif self.path.startswith("/backend"):
            self._backend(body)
        else:
            self._send(404, b"not found", {})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: StandIn


class GoogleStandIn:
    """Start with ``GoogleStandIn()``; ``.url``, ``.host``, ``.state``; ``.stop()`` at the end."""

    def __init__(self, state: StandIn | None = None) -> None:
        self.state = state or StandIn()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self.url = f"http://{self.host}"
        # A short poll: stop() waits for serve_forever to notice, once per test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def certs_url(self, name: str) -> str:
        return f"{self.url}/certs/{name}"

    def service_account_file(self, path: str, email: str = SA_EMAIL) -> str:
        """Write a service-account key file whose token_uri points at this server."""
        key = KeyPair.generate(f"sa-{len(self.state.service_accounts)}")
        self.state.service_accounts[email] = key
        info = {
            "type": "service_account",
            "project_id": FIREBASE_PROJECT,
            "private_key_id": key.kid,
            "private_key": key.private_pem,
            "client_email": email,
            "client_id": "1234567890",
            "token_uri": f"{self.url}/token",
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(info, f)
        return path

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
