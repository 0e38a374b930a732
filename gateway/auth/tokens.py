"""Verification of Firebase and Google ID tokens (RS256 JWTs signed by Google).

Every step is checked here, in an order that never trusts the token before its signature
is known good: size, shape, algorithm (RS256 only: ``none`` and HMAC are refused before any
key is looked at, so a public key can never be used as an HMAC secret), issuer (to pick the
certificate set), signing key, signature, then the claims with ``clock_skew_s`` of slack.
Messages say which rule failed in words a caller can act on, never cryptographic detail.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.auth.certs import CertCache
from gateway.errors import Unauthenticated

MAX_TOKEN_BYTES = 8 * 1024
FIREBASE_ISSUER_PREFIX = "https://securetoken.google.com/"
GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


def reject(reason: str) -> Unauthenticated:
    return Unauthenticated(f"bearer token rejected: {reason}")


@dataclass(frozen=True)
class Identity:
    method: str  # firebase | google
    principal: str  # firebase:<uid> | google:<email>


@dataclass(frozen=True)
class FirebaseRules:
    project_id: str
    certs: CertCache


@dataclass(frozen=True)
class GoogleRules:
    audiences: frozenset[str]
    # Accounts accepted at all; None: any, but only services whose ``allow`` names the
    # caller admit it (see ``Authenticator.authorize``); ``{"*"}``: any, everywhere.
    emails: frozenset[str] | None
    certs: CertCache

    @property
    def any_email(self) -> bool:
        return self.emails is not None and "*" in self.emails


def _b64url(segment: str) -> bytes:
    if not _SEGMENT.fullmatch(segment):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _json_object(segment: str) -> dict[str, Any]:
    value = json.loads(_b64url(segment))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _time_claim(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise reject(f"'{name}' claim missing or not a number")
    return float(value)


class TokenVerifier:
    """Checks bearer tokens against the configured Firebase project and Google audiences."""

    def __init__(
        self,
        *,
        firebase: FirebaseRules | None,
        google: GoogleRules | None,
        clock_skew_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.firebase = firebase
        self.google = google
        self.clock_skew_s = clock_skew_s
        self._clock = clock

    def verify(self, token: str) -> Identity:
        if len(token) > MAX_TOKEN_BYTES:
            raise reject(f"token longer than {MAX_TOKEN_BYTES} bytes")
        parts = token.split(".")
        if len(parts) != 3:
            raise reject("malformed token")
        try:
            header = _json_object(parts[0])
            claims = _json_object(parts[1])
            signature = _b64url(parts[2])
        except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
            # A header of deeply nested arrays makes the JSON parser recurse past its limit.
            raise reject("malformed token") from None

        if header.get("alg") != "RS256":
            raise reject("signing algorithm not accepted (RS256 only)")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise reject("token names no signing key")

        issuer = claims.get("iss")
        if (
            self.firebase is not None
            and issuer == FIREBASE_ISSUER_PREFIX + self.firebase.project_id
        ):
            method, certs = "firebase", self.firebase.certs
        elif self.google is not None and issuer in GOOGLE_ISSUERS:
            method, certs = "google", self.google.certs
        else:
            raise reject("issuer not accepted")

        verifier = certs.verifier(kid)
        if verifier is None:
            raise reject("signed by an unknown key")
        signed = (parts[0] + "." + parts[1]).encode("ascii")
        if not verifier.verify(signed, signature):
            raise reject("invalid signature")

        self._check_times(claims)
        if method == "firebase":
            return self._firebase_identity(claims)
        return self._google_identity(claims)

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now, skew = self._clock(), self.clock_skew_s
        exp = _time_claim(claims, "exp", required=True)
        iat = _time_claim(claims, "iat", required=True)
        nbf = _time_claim(claims, "nbf", required=False)
        if exp is not None and now > exp + skew:
            raise reject("token expired")
        if iat is not None and iat > now + skew:
            raise reject("token issued in the future (check clocks)")
        if nbf is not None and nbf > now + skew:
            raise reject("token not valid yet")

    def _firebase_identity(self, claims: Mapping[str, Any]) -> Identity:
        assert self.firebase is not None
        if claims.get("aud") != self.firebase.project_id:
            raise reject("audience not accepted")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 128:
            raise reject("token has no valid subject")
        auth_time = _time_claim(claims, "auth_time", required=True)
        if auth_time is not None and auth_time > self._clock() + self.clock_skew_s:
            raise reject("sign-in time is in the future")
        return Identity("firebase", f"firebase:{sub}")

    def _google_identity(self, claims: Mapping[str, Any]) -> Identity:
        assert self.google is not None
        aud = claims.get("aud")
        if not isinstance(aud, str) or aud not in self.google.audiences:
            raise reject("audience not accepted")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise reject("token has no valid subject")
        email = claims.get("email")
        if not isinstance(email, str) or not email:
            raise reject("token carries no email (request ID tokens with format=full)")
        verified = claims.get("email_verified")
        if verified is not None and verified is not True and verified != "true":
            raise reject("email not verified")
        emails = self.google.emails
        if emails is not None and not self.google.any_email and email.lower() not in emails:
            raise reject("account not accepted")
        return Identity("google", f"google:{email}")
